"""The YEDDA reader, chunking and the document split."""

import pytest

from weight_tuner import corpus
from weight_tuner.config import CLASSES
from weight_tuner.sample import generate_corpus, write_corpus

from conftest import SKOL_CORPUS


def parse(text, doc="d.ann"):
    report = corpus.ReadReport()
    return corpus.parse_yedda(text, doc, report), report


def test_reading_order_across_multiline_blocks():
    # SKOL numbered lines inside each block and sorted by that, which interleaves blocks.
    text = ("[@first a\nfirst b\nfirst c#Misc-exposition*]\n"
            "[@Name sp. nov.#Nomenclature*]\n\n"
            "[@desc 1\ndesc 2#Description*]\n")
    doc, report = parse(text)
    assert [ln.text for ln in doc.lines] == ["first a", "first b", "first c", "Name sp. nov.", "desc 1", "desc 2"]
    assert [ln.line_no for ln in doc.lines] == [1, 2, 3, 4, 6, 7]
    assert [ln.label for ln in doc.lines] == ["Misc-exposition"] * 3 + ["Nomenclature"] + ["Description"] * 2
    assert report.warnings == []


def test_label_is_after_the_last_hash():
    doc, _ = parse("[@spores 5-7 /#m wide, #3 in the key#Description*]")
    assert doc.lines[0].label == "Description"
    assert doc.lines[0].text == "spores 5-7 /#m wide, #3 in the key"


def test_unclosed_block_warns_and_keeps_the_next_block():
    text = "[@good one#Misc-exposition*]\n[@never closed\nstill open\n[@Agaricus sp. nov.#Nomenclature*]\n"
    doc, report = parse(text, "x/y.ann")
    assert [(ln.text, ln.label) for ln in doc.lines] == [("good one", "Misc-exposition"),
                                                         ("Agaricus sp. nov.", "Nomenclature")]
    assert len(report.warnings) == 1 and report.warnings[0].startswith("x/y.ann:2:")
    assert report.unlabelled_lines == 2


def test_unclosed_block_at_end_of_file():
    doc, report = parse("[@ok#Description*]\n[@dangling text\n")
    assert [ln.text for ln in doc.lines] == ["ok"]
    assert "d.ann:2:" in report.warnings[0] and "end of file" in report.warnings[0]


def test_block_without_label_warns():
    doc, report = parse("[@no label here*]\n[@fine#Misc-exposition*]")
    assert [ln.text for ln in doc.lines] == ["fine"]
    assert report.warnings[0].startswith("d.ann:1:") and "no label" in report.warnings[0]


def test_text_outside_blocks_is_counted_not_labelled():
    doc, report = parse("stray text\n[@in#Misc-exposition*]\nmore stray\n\n")
    assert [ln.text for ln in doc.lines] == ["in"]
    assert report.unlabelled_lines == 2


def test_non_utf8_and_empty_files(tmp_path):
    (tmp_path / "bad.txt.ann").write_bytes(b"[@caf\xe9 line#Misc-exposition*]\n[@Boletus edulis#Nomenclature*]\n")
    (tmp_path / "empty.txt.ann").write_bytes(b"")
    docs, report = corpus.read_corpus(tmp_path)
    by_id = {d.doc_id: d for d in docs}
    assert [ln.label for ln in by_id["bad.txt.ann"].lines] == ["Misc-exposition", "Nomenclature"]
    assert any(w.startswith("bad.txt.ann:1:") and "undecodable" in w for w in report.warnings)
    assert any(w.startswith("empty.txt.ann:1:") for w in report.warnings)


def test_form_feeds_do_not_split_lines():
    doc, _ = parse("[@page one\x0cstill page one\nnext#Misc-exposition*]")
    assert [ln.line_no for ln in doc.lines] == [1, 2]


def test_no_ann_files_is_a_clear_error(tmp_path):
    with pytest.raises(corpus.DataError, match="no .ann files"):
        corpus.read_corpus(tmp_path)
    with pytest.raises(corpus.DataError, match="does not exist"):
        corpus.read_corpus(tmp_path / "missing")


def test_label_mapping_default_and_configured():
    assert corpus.default_label_map("Misc-exposition") == "Misc"
    assert corpus.default_label_map("Nomenclature") == "Nomenclature"
    mapper = corpus.make_label_map({"Diagnosis": "Description"})
    assert mapper("Diagnosis") == "Description" and mapper("Key") == "Misc"


def test_chunks_cut_at_block_boundaries_and_split_is_disjoint():
    docs, _ = corpus.read_texts(generate_corpus(12, seed=3))
    chunks = corpus.chunk_documents(docs, max_lines=30)
    assert len(chunks) > len(docs)
    for ch in chunks:
        blocks = [ln.block for ln in ch.lines]
        doc = ch.chunk_id.split("#")[0]
        # a block never spans two chunks
        others = [c for c in chunks if c.chunk_id.split("#")[0] == doc and c is not ch]
        assert not set(blocks) & {ln.block for c in others for ln in c.lines}
    split = corpus.split_chunks(chunks, seed=7)
    assert split == corpus.split_chunks(chunks, seed=7)
    assert split != corpus.split_chunks(chunks, seed=8)
    ids = [i for name in corpus.SPLITS for i in split[name]]
    assert sorted(ids) == sorted(c.chunk_id for c in chunks) and len(ids) == len(set(ids))
    total = sum(len(d.lines) for d in docs)
    assert sum(len(c.lines) for c in chunks) == total


def test_sample_corpus_is_deterministic_and_imbalanced(tmp_path):
    assert generate_corpus(5, seed=1) == generate_corpus(5, seed=1)
    assert generate_corpus(5, seed=1) != generate_corpus(5, seed=2)
    write_corpus(tmp_path, n_docs=30)
    docs, report = corpus.read_corpus(tmp_path)
    counts = corpus.class_counts(ln for d in docs for ln in d.lines)
    assert report.warnings == []
    assert counts["Nomenclature"] < counts["Description"] < counts["Misc"]
    assert counts["Misc"] / counts["Nomenclature"] > 10


@pytest.mark.skipif(not SKOL_CORPUS.exists(), reason="../shared/skol-corpus is not present")
def test_reads_every_file_of_the_real_corpus():
    docs, report = corpus.read_corpus(SKOL_CORPUS)
    assert report.files == 116
    counts = corpus.class_counts(ln for d in docs for ln in d.lines)
    assert all(counts[c] > 1000 for c in CLASSES)
    assert all(":" in w for w in report.warnings)  # each warning names file:line


def test_a_corpus_with_malformed_blocks_prints_one_summary_line_and_each_warning_with_v(tmp_path, caplog):
    import logging

    from weight_tuner.train import prepare

    write_corpus(tmp_path / "c", n_docs=12, seed=4)
    files = sorted((tmp_path / "c").rglob("*.ann"))
    for f, cuts in zip(files, (3, 1)):  # 3 blocks left open in one file, 1 in another
        text = f.read_text()
        for _ in range(cuts):
            text = text.replace("*]", "", 1)
        f.write_text(text)
    caplog.set_level(logging.DEBUG, logger="weight_tuner")
    prepare(tmp_path / "c", cache_dir=None)
    reader = [r for r in caplog.records if r.name == "weight_tuner.train" and "not closed" in r.getMessage()]
    summary = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(reader) == 4 and all(r.levelno == logging.DEBUG for r in reader)  # each one, with -v
    assert len(summary) == 1, [r.getMessage() for r in summary]
    line = summary[0].getMessage()
    assert "4 warnings" in line and f"in 2 of {len(files)} files" in line
    assert f"{files[0].relative_to(tmp_path / 'c').as_posix()} (3)" in line  # the worst file first


def test_a_utf16_file_is_read_as_utf16_and_said_so(tmp_path):
    from weight_tuner.corpus import ReadReport, decode_bytes

    text = "[@Amanita muscaria (L.) Lam.#Nomenclature*]\n"
    report = ReadReport()
    assert decode_bytes(text.encode("utf-16"), "f.ann", report) == text
    assert report.warnings == ["f.ann:1: UTF-16 (byte-order mark); read as UTF-16, not UTF-8"]
