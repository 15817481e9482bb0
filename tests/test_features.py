"""Line features: word, character and token-shape n-gram TF-IDF plus cues, capped in width, padding
distinguishable; what makes them carry over to another journal (normalised text, shapes, relative length)."""

import json

import numpy as np
import pytest

from weight_tuner import corpus
from weight_tuner.errors import DataError
from weight_tuner.cues import SHAPE_NAMES, document_cues, normalise, shape_grams
from weight_tuner.features import Featurizer
from weight_tuner.sample import generate_corpus


def sample_lines(n_docs=30):
    docs, _ = corpus.read_texts(generate_corpus(n_docs, 0))
    return [ln.text for d in docs for ln in d.lines]


def test_rows_are_capped_in_width_and_padding_is_the_only_zero_row():
    texts = sample_lines()
    f = Featurizer(max_words=64, max_char_grams=128, max_shape_grams=32).fit(texts)
    assert f.n_features == 64 + 128 + 32 + len(SHAPE_NAMES)  # capped: a larger corpus does not widen a row
    X = f.transform(texts)
    assert X.shape == (len(texts) + 1, f.n_features) and X.dtype == np.float16
    assert not X[-1].any() and (X[:-1] != 0).any(axis=1).all()


def test_character_grams_match_a_word_the_ocr_or_a_journal_spelt_differently():
    texts = sample_lines()
    f = Featurizer().fit(texts)
    nw = len(f.word_vectorizer.vocabulary_)
    clean, damaged = "Basidiospores ellipsoid, smooth, hyaline", "Basldiospores ellipsoid, smooth, hyallne"
    a, b = f.transform([clean, damaged], pad_row=False).astype(np.float32)

    def cosine(u, v):
        return float(u @ v / (np.linalg.norm(u) * np.linalg.norm(v)))

    words, chars = slice(0, nw), slice(nw, nw + len(f.char_vectorizer.vocabulary_))
    # Whole words lose the two damaged words entirely; character grams keep most of them.
    assert cosine(a[chars], b[chars]) > 0.8 > cosine(a[words], b[words])


def test_a_saved_featurizer_is_json_and_transforms_identically(tmp_path):
    texts = sample_lines(10)
    f = Featurizer(max_words=32, max_char_grams=64).fit(texts)
    f.save(tmp_path / "f.json")
    saved = json.loads((tmp_path / "f.json").read_text())  # plain data: nothing in it can run
    assert len(saved["words"]["vocabulary"]) == len(saved["words"]["idf"]) == len(f.word_vectorizer.vocabulary_)
    g = Featurizer.load(tmp_path / "f.json")
    np.testing.assert_array_equal(g.transform(texts), f.transform(texts))
    saved["char_grams"]["idf"] = saved["char_grams"]["idf"][:-1]  # one weight lost
    (tmp_path / "bad.json").write_text(json.dumps(saved))
    with pytest.raises(DataError, match=r"featurizer .*bad\.json: not a weight-tuner featurizer"):
        Featurizer.load(tmp_path / "bad.json")


def test_vocabularies_are_fitted_on_a_bounded_sample_of_a_large_training_split(monkeypatch):
    from sklearn.feature_extraction.text import TfidfVectorizer

    from weight_tuner import features

    texts = sample_lines()
    fitted = []
    real_fit = TfidfVectorizer.fit
    monkeypatch.setattr(TfidfVectorizer, "fit", lambda self, docs, y=None: fitted.append(list(docs)) or
                        real_fit(self, docs, y))
    monkeypatch.setattr(features, "FIT_LINES", 50)
    a = Featurizer(max_words=64, max_char_grams=64).fit(texts)
    b = Featurizer(max_words=64, max_char_grams=64).fit(texts)
    assert [len(docs) for docs in fitted] == [50] * 6 < [len(texts)] * 6  # words, characters, shapes; twice
    assert fitted[0] == fitted[3] and set(fitted[0]) <= {normalise(t) for t in texts}  # a fixed sample of the lines
    np.testing.assert_array_equal(a.transform(texts[:20]), b.transform(texts[:20]))
    assert a.params()["fit_lines"] == 50  # part of the cache key
    fitted.clear()
    monkeypatch.setattr(features, "FIT_LINES", len(texts))
    Featurizer(max_words=64, max_char_grams=64).fit(texts)
    assert [len(docs) for docs in fitted] == [len(texts)] * 3  # a split within the bound is used whole


@pytest.mark.parametrize("fit_lines", [10_000, 50])  # the training lines used whole, or a sample of them
def test_fitting_and_transforming_at_once_gives_the_rows_of_fit_then_transform(monkeypatch, fit_lines):
    from weight_tuner import features

    texts = sample_lines()
    train, rest = texts[:700], texts[700:]
    monkeypatch.setattr(features, "FIT_LINES", fit_lines)
    a = Featurizer(max_words=64, max_char_grams=128).fit(train)
    expected = a.transform_rows(train + rest)
    real_blocks = Featurizer._blocks
    monkeypatch.setattr(Featurizer, "_blocks", lambda self, t, f: real_blocks(self, t, f, step=160))  # several blocks
    b = Featurizer(max_words=64, max_char_grams=128)
    rows = b.fit_transform_rows(train, rest)
    assert b.word_vectorizer.vocabulary_ == a.word_vectorizer.vocabulary_
    for name in ("indptr", "indices", "data"):
        np.testing.assert_array_equal(getattr(rows, name), getattr(expected, name))
    assert rows.n_rows == len(texts) + 1 and rows.n_features == a.n_features


def test_the_input_pipeline_reads_the_rows_in_place_not_a_copy_of_them():
    """TensorFlow never holds the corpus's rows: a batch is read from the store when it is drawn, so a
    change to the store after the pipeline was made shows in the next batch (a copy would not)."""
    from weight_tuner.train import SplitData, make_dataset
    from weight_tuner.windows import build_windows

    texts = sample_lines()
    rows = Featurizer(max_words=64, max_char_grams=128).fit(texts).transform_rows(texts)
    y = np.zeros(len(texts), dtype=np.int64)
    split = SplitData.whole("all", rows, y, np.array([0, len(texts)]), ["all"])
    windows = build_windows(split.offsets, 10, 10, split.pad_index)
    ds = make_dataset(split, windows, 4, labels=False)
    ids, values = rows.gather(split.index[windows[:4]])
    first = next(iter(ds))
    np.testing.assert_array_equal(first["ids"].numpy(), ids)
    np.testing.assert_array_equal(first["values"].numpy(), values)
    rows.data *= 2  # in place, after the pipeline was built
    np.testing.assert_array_equal(next(iter(ds))["values"].numpy(), 2 * values)


def test_a_ligature_a_micro_sign_or_an_en_dash_reads_as_plain_text():
    """One journal typesets "ﬁ", "µ" and "–", another "fi", "μ" and "-": the same line, the same row."""
    f = Featurizer().fit(sample_lines())
    typeset, plain = "Basidia ﬁbulate, spores 5–7 × 3 µm, diﬀerent “type”", 'Basidia fibulate, spores 5-7 × 3 μm, different "type"'
    assert normalise(typeset) == plain
    np.testing.assert_array_equal(f.transform([typeset]), f.transform([plain]))


def test_token_shapes_make_two_citations_alike_whatever_their_names():
    """A synonym in Mycotaxon's style and one of another genus share the shape of a citation, not its words."""
    f = Featurizer().fit(sample_lines())
    a = "Meliola salaciae Hansf., Proc. Linn. Soc. London 157: 182, 1972."
    b = "Trametes hirsuta Wulf., Bull. Torr. Bot. Club 32: 640, 1905."
    assert "0 : 0 ," in shape_grams(a) and set(shape_grams(a)) == set(shape_grams(b))
    x, y = f.transform([a, b], pad_row=False).astype(np.float32)
    nw, nc = len(f.word_vectorizer.vocabulary_), len(f.char_vectorizer.vocabulary_)
    shapes = slice(nw + nc, nw + nc + len(f.shape_vectorizer.vocabulary_))
    assert x[shapes].any() and np.allclose(x[shapes], y[shapes])


def test_length_is_read_against_the_document_not_the_journal():
    """A 60-character line is long among 40-character lines and short among 120-character ones; each document's
    medians are its own."""
    line = "x" * 60
    short_doc, long_doc = [line] + ["y" * 40] * 4, [line] + ["z" * 120] * 4
    cues = document_cues(short_doc + long_doc, [5, 5])
    rel = SHAPE_NAMES.index("relative_length")
    assert cues[0, rel] == pytest.approx(60 / 40) and cues[5, rel] == pytest.approx(60 / 120)
    assert cues[0, SHAPE_NAMES.index("length")] == cues[5, SHAPE_NAMES.index("length")]  # the absolute cue alike
    np.testing.assert_array_equal(document_cues(short_doc, None), cues[:5])  # one document: the same cues
    with pytest.raises(ValueError, match="add up to 9 lines, not 10"):
        document_cues(short_doc + long_doc, [5, 4])


def test_a_featurizer_of_an_older_features_version_is_refused_naming_it(tmp_path):
    f = Featurizer(max_words=32, max_char_grams=64).fit(sample_lines(10))
    f.save(tmp_path / "f.json")
    saved = json.loads((tmp_path / "f.json").read_text())
    saved["version"] = 3
    (tmp_path / "old.json").write_text(json.dumps(saved))
    with pytest.raises(DataError, match=r"old\.json: saved with features version 3; this weight-tuner computes "
                                        r"version 4: train the model again"):
        Featurizer.load(tmp_path / "old.json")


def test_a_study_made_with_older_features_is_not_resumed_with_these(prepared):
    """Its trials' scores would not compare with new ones: a study without a version was made with version 3."""
    import optuna

    from weight_tuner.errors import StudyError
    from weight_tuner.storage import check_same_data

    study = optuna.create_study(storage=optuna.storages.InMemoryStorage(), study_name="old")
    study.set_user_attr("data_fingerprint", prepared.fingerprint)
    with pytest.raises(StudyError, match=r"study 'old' was made with features version 3; this weight-tuner computes "
                                         r"version 4"):
        check_same_data(study, prepared)
    study.set_user_attr("features_version", 4)
    check_same_data(study, prepared)


def test_a_blank_line_marks_the_edge_of_a_paragraph_in_training_and_in_prediction():
    """Lines 1, 2, 4, 5 of a file: a blank line 3 between them; a document's first and last lines are edges."""
    cues = document_cues(["a", "b", "c", "d"], [4], [1, 2, 4, 5])
    before, after = SHAPE_NAMES.index("blank_before"), SHAPE_NAMES.index("blank_after")
    assert cues[:, before].tolist() == [1, 0, 1, 0] and cues[:, after].tolist() == [0, 1, 0, 1]
    both = document_cues(["a", "b", "c", "d"], [2, 2], [1, 2, 1, 2])  # two files of two lines each
    assert both[:, before].tolist() == [1, 0, 1, 0] and both[:, after].tolist() == [0, 1, 0, 1]
    with pytest.raises(ValueError, match="3 line numbers for 4 lines"):
        document_cues(["a", "b", "c", "d"], [4], [1, 2, 3])
