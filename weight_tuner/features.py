"""Features stage: one vector per line, computed once per corpus and cached on disk.

A line's vector is word TF-IDF, character 2-4-gram TF-IDF (within word boundaries) and a few
cheap shape cues (capitals, digits, µm, years, "sp. nov.", length). Character n-grams carry over
OCR errors and another journal's typography, where whole words do not: on SKOL, trained on one
journal and tested on the other, they replaced word suffixes for +0.044 important_f1
(docs/benchmarks.md). The vectorisers are fitted on the training split only, and their
vocabularies are capped, so a row's width does not grow with the corpus. Every real line has a
constant 1.0 feature, so a row without non-zeros means padding and the model can mask it.

Rows are stored sparse (:class:`.rows.SparseRows`, CSR): a SKOL line has about 82 non-zeros of 2,063
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

from .errors import DataError
from .paths import check_manifest, read_json, write_json, write_manifest
from .rows import FEATURE_DTYPE, SparseRows, concatenate_freeing, return_freed_memory

logger = logging.getLogger(__name__)

FEATURES_VERSION = 3  # 3: character 2-4-grams instead of word suffixes
CACHE_FORMAT = "csr-2"  # how rows are laid out on disk (part of the cache key); 2: JSON featurizer, manifest
# The vocabularies and IDF weights are fitted on at most this many training lines (a fixed sample
# beyond): fitting counts every n-gram of every line before the vocabulary is capped, which grew
# without bound with the corpus. SKOL's 124k training lines are all used.
FIT_LINES = 200_000

_DIGITS = re.compile(r"\d")
_WORD = re.compile(r"[^\W\d_]{2,}", re.UNICODE)
_YEAR = re.compile(r"\b(1[789]\d\d|20[0-4]\d)\b")
_MICRONS = re.compile(r"µm|μm|/#m|\bum\b|\bmu\b", re.IGNORECASE)
_NOV = re.compile(r"\b(sp|comb|gen|var|stat|nom)\.\s*nov\b", re.IGNORECASE)
_BINOMIAL = re.compile(r"^[A-Z][a-z]+ [a-z]{3,}\b")
_MEASURE = re.compile(r"\d\s*[-–]\s*\d|\d\s*[×x]\s*\d")

SHAPE_NAMES = ("bias", "upper_frac", "starts_upper", "digit_frac", "microns", "year", "nov", "binomial",
               "measure", "length", "tokens", "ends_period", "starts_digit", "punct_frac", "equals")


def shape_features(text: str) -> list[float]:
    """Cheap layout cues for one line, each roughly in [0, 1]."""
    n = max(len(text), 1)
    letters = sum(ch.isalpha() for ch in text)
    return [
        1.0,  # bias: marks a real line, so padding (all zeros) is distinguishable
        sum(ch.isupper() for ch in text) / max(letters, 1),
        float(text[:1].isupper()),
        sum(ch.isdigit() for ch in text) / n,
        float(bool(_MICRONS.search(text))),
        float(bool(_YEAR.search(text))),
        float(bool(_NOV.search(text))),
        float(bool(_BINOMIAL.match(text))),
        float(bool(_MEASURE.search(text))),
        min(len(text) / 100.0, 2.0),
        min(len(text.split()) / 20.0, 2.0),
        float(text.rstrip().endswith(".")),
        float(text[:1].isdigit()),
        sum(not ch.isalnum() and not ch.isspace() for ch in text) / n,
        float("=" in text or "≡" in text),
    ]


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _word_tokens(text: str) -> list[str]:
    return _words(_DIGITS.sub("0", text))


@dataclass
class Featurizer:
    """Fitted vectorisers that turn lines of text into float16 feature rows."""

    max_words: int = 1024
    max_char_grams: int = 1024
    word_vectorizer: TfidfVectorizer | None = None
    char_vectorizer: TfidfVectorizer | None = None

    def params(self) -> dict:
        """The parameters that define the features (part of the cache key)."""
        return {"max_words": self.max_words, "max_char_grams": self.max_char_grams, "version": FEATURES_VERSION,
                "fit_lines": FIT_LINES}

    def fit(self, texts: Sequence[str]) -> "Featurizer":
        """Fit both TF-IDF vocabularies on ``texts`` (the training split), or on a fixed sample of
        :data:`FIT_LINES` of them when there are more."""
        if len(texts) > FIT_LINES:
            keep = np.sort(np.random.default_rng(0).choice(len(texts), FIT_LINES, replace=False))
            texts = [texts[i] for i in keep]
        self.word_vectorizer = _word_vectorizer(max_features=self.max_words, min_df=2)
        self.char_vectorizer = _char_vectorizer(max_features=self.max_char_grams, min_df=2)
        self.word_vectorizer.fit(texts)
        self.char_vectorizer.fit(texts)
        return self

    @property
    def n_features(self) -> int:
        """Width of a feature row."""
        return (len(self.word_vectorizer.vocabulary_) + len(self.char_vectorizer.vocabulary_)
                + len(SHAPE_NAMES))

    def transform_rows(self, texts: Sequence[str], pad_row: bool = True) -> SparseRows:
        """Sparse feature rows for ``texts``; with ``pad_row`` an empty padding row is appended.

        Each block of lines is cut to the stored types (int32 ids, float16 values) at once, so the
        corpus's rows never exist as float32 scipy matrices, only block by block.
        """
        if self.word_vectorizer is None:
            raise RuntimeError("Featurizer.transform called before fit")
        return self._rows(texts, None, pad_row)

    def fit_transform_rows(self, train: Sequence[str], rest: Sequence[str]) -> SparseRows:
        """Fit on ``train`` (as :meth:`fit`) and return the rows of ``train`` then ``rest`` and the padding
        row: the rows of ``fit`` then ``transform_rows``, with each training line analysed once, not twice
        (fitting counts every n-gram of every line, which is most of a transform's work)."""
        if len(train) > FIT_LINES:  # fitted on a sample: every line is transformed afterwards
            return self.fit(train).transform_rows([*train, *rest])
        self.word_vectorizer = _word_vectorizer(max_features=self.max_words, min_df=2)
        self.char_vectorizer = _char_vectorizer(max_features=self.max_char_grams, min_df=2)
        fitted = (self.word_vectorizer.fit_transform(train), self.char_vectorizer.fit_transform(train))
        return self._rows([*train, *rest], fitted)

    def _rows(self, texts: Sequence[str], fitted: tuple | None, pad_row: bool = True) -> SparseRows:
        """The rows of ``texts`` block by block; ``fitted`` holds the word and character matrices of the
        first lines already (from fitting), which are not analysed again."""
        from scipy import sparse

        indptr, indices, data, nnz = [np.zeros(1, dtype=np.int64)], [], [], 0
        for part, words, chars in self._blocks(texts, fitted):
            shape = sparse.csr_matrix(np.asarray([shape_features(t) for t in part], dtype=np.float32))
            block = sparse.hstack([words, chars, shape], format="csr", dtype=np.float32)
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
        """``(lines, word matrix, character matrix)`` per block of at most ``step`` lines (bounded temporary
        memory on large corpora): sliced from ``fitted`` for its lines, transformed for the rest."""
        done = 0 if fitted is None else fitted[0].shape[0]
        for lo in range(0, done, step):
            hi = min(lo + step, done)
            yield texts[lo:hi], fitted[0][lo:hi], fitted[1][lo:hi]
        for lo in range(done, len(texts), step):
            part = texts[lo : lo + step]
            yield part, self.word_vectorizer.transform(part), self.char_vectorizer.transform(part)

    def transform(self, texts: Sequence[str], pad_row: bool = True) -> np.ndarray:
        """Dense float16 rows for ``texts`` (small inputs and tests); see :meth:`transform_rows`."""
        rows = self.transform_rows(texts, pad_row)
        return rows.csr().toarray().astype(FEATURE_DTYPE)

    def save(self, path: str | Path) -> None:
        """Write the fitted vocabularies and IDF weights as JSON (atomically). Never pickle: a shared models
        folder must not be able to run code in the process that loads it."""
        blocks = {}
        for name, vec in (("words", self.word_vectorizer), ("char_grams", self.char_vectorizer)):
            vocab = sorted(vec.vocabulary_.items(), key=lambda kv: kv[1])
            blocks[name] = {"vocabulary": [term for term, _ in vocab], "idf": [float(x) for x in vec.idf_]}
        write_json(path, {"format": "featurizer-json-1", **self.params(), **blocks})

    @staticmethod
    def load(path: str | Path) -> "Featurizer":
        """A featurizer saved by :meth:`save`; anything else is a one-line :class:`.errors.DataError`."""
        saved = read_json(path, "featurizer")
        try:
            if saved.get("format") != "featurizer-json-1" or saved.get("version") != FEATURES_VERSION:
                raise ValueError(f"format {saved.get('format')!r}, features version {saved.get('version')!r}")
            featurizer = Featurizer(int(saved["max_words"]), int(saved["max_char_grams"]))
            vectorizers = []
            for name, make in (("words", _word_vectorizer), ("char_grams", _char_vectorizer)):
                terms, idf = saved[name]["vocabulary"], np.asarray(saved[name]["idf"], dtype=np.float64)
                if len(terms) != len(idf) or len(set(terms)) != len(terms):
                    raise ValueError(f"{name}: {len(terms)} terms, {len(idf)} IDF weights")
                vec = make(vocabulary={t: i for i, t in enumerate(terms)})
                vec.idf_ = idf
                vectorizers.append(vec)
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise DataError(f"featurizer {path}: not a weight-tuner featurizer of this version ({exc})") from exc
        featurizer.word_vectorizer, featurizer.char_vectorizer = vectorizers
        return featurizer


def _word_vectorizer(**kw) -> TfidfVectorizer:
    return TfidfVectorizer(analyzer=_word_tokens, sublinear_tf=True, dtype=np.float32, **kw)


def _char_vectorizer(**kw) -> TfidfVectorizer:
    return TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), lowercase=True, sublinear_tf=True,
                           dtype=np.float32, **kw)


def cache_key(data_fingerprint: str, split: dict, featurizer: Featurizer) -> str:
    """Cache key: the data, the split, the feature parameters and the on-disk layout."""
    blob = json.dumps({"data": data_fingerprint, "split": split, "features": featurizer.params(),
                       "format": CACHE_FORMAT}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def build_features(split_texts: dict[str, list[str]], data_fingerprint: str, split: dict,
                   cache_dir: str | Path | None, featurizer: Featurizer | None = None
                   ) -> tuple[Featurizer, SparseRows, dict[str, tuple[int, int]], bool]:
    """The rows of every split in one sparse store, from the cache when possible.

    Returns ``(featurizer, rows, ranges, cache_hit)``: split ``name``'s lines are rows
    ``ranges[name][0]`` to ``ranges[name][1]`` (the training lines first, then ``split_texts``' order), and
    the store's last row is the empty padding row.
    """
    featurizer = featurizer or Featurizer()
    key = cache_key(data_fingerprint, split, featurizer)
    cache = Path(cache_dir) / f"features-{key}" if cache_dir else None
    split_texts = {"train": split_texts["train"], **split_texts}  # the training lines come first (fitted first)
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
                                         [t for name, texts in split_texts.items() if name != "train" for t in texts])
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
