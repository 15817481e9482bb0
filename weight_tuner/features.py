"""Features stage: one vector per line, computed once per corpus and cached on disk.

A line's vector is word TF-IDF, character 2-4-gram TF-IDF (within word boundaries), TF-IDF of its
token-shape n-grams and a few cheap cues (capitals, digits, µm, years, "sp. nov.", length, and length
relative to its document's median). What carries over to a journal the model has not seen (on
SKOL, trained on one journal and tested on the other: docs/benchmarks.md):

- character n-grams carry OCR errors and another journal's typography, where whole words do not;
- text is compared in Unicode's compatibility form (NFKC) with dashes and quotes folded, so a
  ligature (``ﬁ``), a micro sign or an en dash reads as another journal's plain letters;
- token shapes (``Aa a Aa . , Aa . 0 : 0 , Y .``) describe a citation or a measurement whatever
  its genus and author names, which are the words one journal's vocabulary holds and another's lacks;
- a line's length against its document's median, not in characters: journals set different widths;
- whether a blank line stands before or after it (a paragraph's edges), from the line numbers.

The vectorisers are fitted on the training split only, and their vocabularies are capped, so a
row's width does not grow with the corpus. Every real line has a constant 1.0 feature, so a row
without non-zeros means padding and the model can mask it.

Rows are stored sparse (:class:`.rows.SparseRows`, CSR): a SKOL line has about 116 non-zeros of 3,091
columns, so memory follows the text, not lines x vocabulary. The cache keeps the CSR arrays as
``.npy`` files that are memory-mapped when read back.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer

from .cues import SHAPE_NAMES, document_cues, normalise, shape_grams
from .errors import DataError
from .paths import check_manifest, read_json, write_json, write_manifest
from .rows import FEATURE_DTYPE, SparseRows, concatenate_freeing, return_freed_memory

logger = logging.getLogger(__name__)

FEATURES_VERSION = 4  # 3: character 2-4-grams instead of word suffixes; 4: NFKC, token shapes, relative length
CACHE_FORMAT = "csr-2"  # how rows are laid out on disk (part of the cache key); 2: JSON featurizer, manifest
# The vocabularies and IDF weights are fitted on at most this many training lines (a fixed sample
# beyond): fitting counts every n-gram of every line before the vocabulary is capped, which grew
# without bound with the corpus. SKOL's 124k training lines are all used.
FIT_LINES = 200_000

_DIGITS = re.compile(r"\d")
_WORD = re.compile(r"[^\W\d_]{2,}", re.UNICODE)
def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _word_tokens(text: str) -> list[str]:
    return _words(_DIGITS.sub("0", text))


VECTORIZERS = ("words", "char_grams", "shape_grams")  # the TF-IDF blocks of a row, in order, then the cues


@dataclass
class Featurizer:
    """Fitted vectorisers that turn lines of text into float16 feature rows."""

    max_words: int = 1024
    max_char_grams: int = 1024
    max_shape_grams: int = 1024
    word_vectorizer: TfidfVectorizer | None = None
    char_vectorizer: TfidfVectorizer | None = None
    shape_vectorizer: TfidfVectorizer | None = None

    def params(self) -> dict:
        """The parameters that define the features (part of the cache key)."""
        return {"max_words": self.max_words, "max_char_grams": self.max_char_grams,
                "max_shape_grams": self.max_shape_grams, "version": FEATURES_VERSION, "fit_lines": FIT_LINES}

    @property
    def vectorizers(self) -> tuple:
        return self.word_vectorizer, self.char_vectorizer, self.shape_vectorizer

    def _new_vectorizers(self) -> tuple:
        self.word_vectorizer = _word_vectorizer(max_features=self.max_words, min_df=2)
        self.char_vectorizer = _char_vectorizer(max_features=self.max_char_grams, min_df=2)
        self.shape_vectorizer = _shape_vectorizer(max_features=self.max_shape_grams, min_df=2)
        return self.vectorizers

    def fit(self, texts: Sequence[str]) -> "Featurizer":
        """Fit the TF-IDF vocabularies on ``texts`` (the training split), or on a fixed sample of
        :data:`FIT_LINES` of them when there are more."""
        if len(texts) > FIT_LINES:
            keep = np.sort(np.random.default_rng(0).choice(len(texts), FIT_LINES, replace=False))
            texts = [texts[i] for i in keep]
        texts = [normalise(t) for t in texts]
        for vectorizer in self._new_vectorizers():
            vectorizer.fit(texts)
        return self

    @property
    def n_features(self) -> int:
        """Width of a feature row."""
        return sum(len(v.vocabulary_) for v in self.vectorizers) + len(SHAPE_NAMES)

    def transform_rows(self, texts: Sequence[str], sizes: Sequence[int] | None = None,
                       line_nos: Sequence[int] | None = None, pad_row: bool = True) -> SparseRows:
        """Sparse feature rows for ``texts``, consecutive documents of ``sizes`` lines (``None``: one document),
        numbered ``line_nos`` in their files (see :func:`document_cues`); with ``pad_row`` an empty padding row
        is appended.

        Each block of lines is cut to the stored types (int32 ids, float16 values) at once, so the
        corpus's rows never exist as float32 scipy matrices, only block by block.
        """
        if self.word_vectorizer is None:
            raise RuntimeError("Featurizer.transform called before fit")
        return self._rows([normalise(t) for t in texts], sizes, line_nos, None, pad_row)

    def fit_transform_rows(self, train: Sequence[str], rest: Sequence[str], sizes: Sequence[int] | None = None,
                           line_nos: Sequence[int] | None = None) -> SparseRows:
        """Fit on ``train`` (as :meth:`fit`) and return the rows of ``train`` then ``rest`` (documents of
        ``sizes`` lines over both, numbered ``line_nos``) and the padding row: the rows of ``fit`` then
        ``transform_rows``, with each training line analysed once, not twice (fitting counts every n-gram of
        every line, which is most of a transform's work)."""
        if len(train) > FIT_LINES:  # fitted on a sample: every line is transformed afterwards
            return self.fit(train).transform_rows([*train, *rest], sizes, line_nos)
        texts = [normalise(t) for t in (*train, *rest)]
        fitted = tuple(v.fit_transform(texts[:len(train)]) for v in self._new_vectorizers())
        return self._rows(texts, sizes, line_nos, fitted)

    def _rows(self, texts: Sequence[str], sizes: Sequence[int] | None, line_nos: Sequence[int] | None,
              fitted: tuple | None, pad_row: bool = True) -> SparseRows:
        """The rows of ``texts`` (already passed through :func:`.cues.normalise`) block by block; ``fitted`` holds the TF-IDF
        matrices of the first lines already (from fitting), which are not analysed again."""
        from scipy import sparse

        cues = document_cues(texts, sizes, line_nos)
        indptr, indices, data, nnz = [np.zeros(1, dtype=np.int64)], [], [], 0
        for lo, hi, blocks in self._blocks(texts, fitted):
            block = sparse.hstack([*blocks, sparse.csr_matrix(cues[lo:hi])], format="csr", dtype=np.float32)
            block.data = block.data.astype(FEATURE_DTYPE).astype(np.float32)
            block.eliminate_zeros()  # a value below float16's range is a zero, as it was in dense rows
            block.sort_indices()
            indices.append(block.indices.astype(np.int32))
            data.append(block.data.astype(FEATURE_DTYPE))
            indptr.append(block.indptr[1:].astype(np.int64) + nnz)
            nnz += block.nnz
        if pad_row:
            indptr.append(np.array([nnz], dtype=np.int64))
        return SparseRows(np.concatenate(indptr), concatenate_freeing(indices, np.int32, nnz),
                          concatenate_freeing(data, FEATURE_DTYPE, nnz), self.n_features)

    def _blocks(self, texts: Sequence[str], fitted: tuple | None, step: int = 20000):
        """``(first line, end, TF-IDF matrices)`` per block of at most ``step`` lines (bounded temporary memory
        on large corpora): sliced from ``fitted`` for its lines, transformed for the rest."""
        done = 0 if fitted is None else fitted[0].shape[0]
        for lo in range(0, done, step):
            hi = min(lo + step, done)
            yield lo, hi, [m[lo:hi] for m in fitted]
        for lo in range(done, len(texts), step):
            hi = min(lo + step, len(texts))
            yield lo, hi, [v.transform(texts[lo:hi]) for v in self.vectorizers]

    def transform(self, texts: Sequence[str], pad_row: bool = True) -> np.ndarray:
        """Dense float16 rows for ``texts`` (one document; small inputs and tests); see :meth:`transform_rows`."""
        rows = self.transform_rows(texts, pad_row=pad_row)
        return rows.csr().toarray().astype(FEATURE_DTYPE)

    def save(self, path: str | Path) -> None:
        """Write the fitted vocabularies and IDF weights as JSON (atomically). Never pickle: a shared models
        folder must not be able to run code in the process that loads it."""
        blocks = {}
        for name, vec in zip(VECTORIZERS, self.vectorizers):
            vocab = sorted(vec.vocabulary_.items(), key=lambda kv: kv[1])
            blocks[name] = {"vocabulary": [term for term, _ in vocab], "idf": [float(x) for x in vec.idf_]}
        write_json(path, {"format": "featurizer-json-1", **self.params(), **blocks})

    @staticmethod
    def load(path: str | Path) -> "Featurizer":
        """A featurizer saved by :meth:`save`; anything else is a one-line :class:`.errors.DataError` (a bundle of
        an older features version names its version: its rows cannot be computed by this one)."""
        saved = read_json(path, "featurizer")
        version = saved.get("version") if isinstance(saved, dict) else None
        if isinstance(version, int) and version != FEATURES_VERSION and saved.get("format") == "featurizer-json-1":
            raise DataError(f"featurizer {path}: saved with features version {version}; this weight-tuner computes "
                            f"version {FEATURES_VERSION}: train the model again (weight-tuner tune or train)")
        try:
            if saved.get("format") != "featurizer-json-1" or version != FEATURES_VERSION:
                raise ValueError(f"format {saved.get('format')!r}, features version {version!r}")
            featurizer = Featurizer(int(saved["max_words"]), int(saved["max_char_grams"]),
                                    int(saved["max_shape_grams"]))
            vectorizers = []
            for name, make in zip(VECTORIZERS, (_word_vectorizer, _char_vectorizer, _shape_vectorizer)):
                terms, idf = saved[name]["vocabulary"], np.asarray(saved[name]["idf"], dtype=np.float64)
                if len(terms) != len(idf) or len(set(terms)) != len(terms):
                    raise ValueError(f"{name}: {len(terms)} terms, {len(idf)} IDF weights")
                vec = make(vocabulary={t: i for i, t in enumerate(terms)})
                vec.idf_ = idf
                vectorizers.append(vec)
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise DataError(f"featurizer {path}: not a weight-tuner featurizer of this version ({exc})") from exc
        featurizer.word_vectorizer, featurizer.char_vectorizer, featurizer.shape_vectorizer = vectorizers
        return featurizer


def _word_vectorizer(**kw) -> TfidfVectorizer:
    return TfidfVectorizer(analyzer=_word_tokens, sublinear_tf=True, dtype=np.float32, **kw)


def _shape_vectorizer(**kw) -> TfidfVectorizer:
    return TfidfVectorizer(analyzer=shape_grams, sublinear_tf=True, dtype=np.float32, **kw)


def _char_vectorizer(**kw) -> TfidfVectorizer:
    return TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), lowercase=True, sublinear_tf=True,
                           dtype=np.float32, **kw)


def cache_key(data_fingerprint: str, split: dict, featurizer: Featurizer) -> str:
    """Cache key: the data, the split, the feature parameters and the on-disk layout."""
    blob = json.dumps({"data": data_fingerprint, "split": split, "features": featurizer.params(),
                       "format": CACHE_FORMAT}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def build_features(split_texts: dict[str, list[str]], data_fingerprint: str, split: dict,
                   cache_dir: str | Path | None, featurizer: Featurizer | None = None,
                   doc_sizes: dict[str, list[int]] | None = None, line_nos: dict[str, list[int]] | None = None
                   ) -> tuple[Featurizer, SparseRows, dict[str, tuple[int, int]], bool]:
    """The rows of every split in one sparse store, from the cache when possible. ``doc_sizes[name]``: the
    lines of each document (chunk) of split ``name``, in order (a line's length is read against its
    document's median; ``None``: each split is one document); ``line_nos[name]``: each line's number in its
    file (where blank lines stand; ``None``: nowhere but at the documents' edges).

    Returns ``(featurizer, rows, ranges, cache_hit)``: split ``name``'s lines are rows
    ``ranges[name][0]`` to ``ranges[name][1]`` (the training lines first, then ``split_texts``' order), and
    the store's last row is the empty padding row.
    """
    featurizer = featurizer or Featurizer()
    key = cache_key(data_fingerprint, split, featurizer)
    cache = Path(cache_dir) / f"features-{key}" if cache_dir else None
    split_texts = {"train": split_texts["train"], **split_texts}  # the training lines come first (fitted first)
    sizes = [n for name, texts in split_texts.items()
             for n in ((doc_sizes or {}).get(name) or [len(texts)])]
    numbers = None if line_nos is None else [n for name in split_texts for n in line_nos[name]]
    ranges, lo = {}, 0
    for name, texts in split_texts.items():
        ranges[name] = (lo, lo + len(texts))
        lo += len(texts)
    if cache is not None and (cache / CACHE_MANIFEST).exists():
        try:
            check_manifest(cache / CACHE_MANIFEST, "feature cache")
            featurizer = Featurizer.load(cache / "featurizer.json")
            rows = SparseRows.load(cache, featurizer.n_features)
            logger.info(f"features: loaded from the cache {cache}")
            _log_size(rows)
            return featurizer, rows, ranges, True
        except DataError as exc:  # IntegrityError included: the cache is only a copy, so rebuild it
            logger.warning(f"{exc}; computing the features again")
            _discard(cache)
    logger.info(f"computing features for {lo} lines ...")
    rows = featurizer.fit_transform_rows(split_texts["train"],
                                         [t for name, texts in split_texts.items() if name != "train" for t in texts],
                                         sizes, numbers)
    return_freed_memory()  # the vocabulary count's temporaries (hundreds of MB on 200k lines)
    if cache is not None:
        _store(cache, rows, featurizer)
        rows = SparseRows.load(cache, featurizer.n_features)  # mapped, as a cache hit is: pages the system can evict
    _log_size(rows)
    return featurizer, rows, ranges, False


CACHE_MANIFEST = "manifest.json"  # written last, with every array's size and SHA-256: checked on each load


def _store(cache: Path, rows: SparseRows, featurizer: Featurizer) -> None:
    """Write the cache in a private folder, then rename it into place: a reader sees all of it or nothing,
    and processes building one cache at once do not write into each other's files."""
    tmp = cache.with_name(f".{cache.name}.{os.getpid()}.tmp")
    _discard(tmp)
    rows.save(tmp)
    featurizer.save(tmp / "featurizer.json")
    write_manifest(tmp / CACHE_MANIFEST, [tmp / f for f in ("indptr.npy", "indices.npy", "data.npy", "featurizer.json")])
    try:
        os.rename(tmp, cache)
    except OSError:  # another process stored it first (or a stale folder without manifest is there)
        if not (cache / CACHE_MANIFEST).exists():
            _discard(cache)
            os.rename(tmp, cache)
        else:
            _discard(tmp)


def _discard(folder: Path) -> None:
    """Remove a cache folder: renamed aside first, so that no reader maps a file half deleted."""
    if not folder.exists():
        return
    aside = folder.with_name(f".{folder.name}.{os.getpid()}.discard")
    try:
        os.rename(folder, aside)
    except OSError:
        return  # another process moved it already
    shutil.rmtree(aside, ignore_errors=True)


def _log_size(rows: SparseRows) -> None:
    lines = rows.n_rows - 1
    size = sum(getattr(rows, a).nbytes for a in ("indptr", "indices", "data"))
    logger.info(f"features: {lines} lines x {rows.n_features} columns, {rows.nnz} non-zeros "
                f"({rows.nnz / max(lines, 1):.0f} per line), {size / 2**20:.0f} MiB sparse")
