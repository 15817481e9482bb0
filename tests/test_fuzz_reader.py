"""Property-based fuzzing of the YEDDA reader: it never crashes and never loses a well-formed block."""

from hypothesis import given, settings
from hypothesis import strategies as st

from weight_tuner import corpus
from weight_tuner.sample import generate_document

LABELS = ["Nomenclature", "Description", "Misc-exposition", "Bibliography", "m", "Page-header"]
# Noise between blocks may hold anything except the two delimiters.
noise = st.text(alphabet=st.characters(blacklist_characters="[*@"), max_size=40)
line_text = st.text(alphabet=st.characters(blacklist_characters="[]*\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"),
                    min_size=1, max_size=30).filter(lambda t: t.strip(" \t\r\f\v"))
block = st.tuples(st.lists(line_text, min_size=1, max_size=4), st.sampled_from(LABELS))

REAL = generate_document(0, 0)  # realistic blocks to mutate
fragments = st.sampled_from(["[@", "*]", "#", "\n", "\x0c", "\ufffd", "[@x#", "#m*]", "", "  "])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(noise, block), max_size=8), noise)
def test_well_formed_blocks_are_never_lost(parts, tail):
    text = "".join(n + "[@" + "\n".join(lines) + "#" + label + "*]" for n, (lines, label) in parts) + tail
    report = corpus.ReadReport()
    doc = corpus.parse_yedda(text, "fuzz.ann", report)
    # Lines may hold '#': the label is still the text after the block's last '#'.
    expected = [(t.strip(" \t\r\f\v"), label) for _, (lines, label) in parts for t in lines]
    assert [(ln.text, ln.label) for ln in doc.lines] == expected
    assert report.warnings == []
    assert [ln.line_no for ln in doc.lines] == sorted(ln.line_no for ln in doc.lines)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(REAL)), st.integers(0, 40), fragments), max_size=12))
def test_mutated_real_text_never_crashes(edits):
    text = REAL
    for pos, cut, frag in edits:
        pos = min(pos, len(text))
        text = text[:pos] + frag + text[pos + cut :]
    report = corpus.ReadReport()
    doc = corpus.parse_yedda(text, "mutated.ann", report)
    for ln in doc.lines:
        assert ln.text and ln.label and "\n" not in ln.text
    assert all(w.startswith("mutated.ann:") for w in report.warnings)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_read_as_files(tmp_path_factory, data):
    d = tmp_path_factory.mktemp("bytes")
    (d / "f.txt.ann").write_bytes(data)
    docs, report = corpus.read_corpus(d)
    assert len(docs) == 1
    assert all(w.startswith("f.txt.ann:") for w in report.warnings)
