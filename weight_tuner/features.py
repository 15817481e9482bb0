"""Features stage: one vector per line, computed once per corpus and cached on disk.

A line's vector is word TF-IDF, character 2-4-gram TF-IDF (within word boundaries) and a few
cheap shape cues (capitals, digits, µm, years, "sp. nov.", length). Character n-grams carry over
OCR errors and another journal's typography, where whole words do not: on SKOL, trained on one
journal and tested on the other, they replaced word suffixes for +0.044 important_f1
(docs/benchmarks.md). The vectorisers are fitted on the training split only, and their
vocabularies are capped, so a row's width does not grow with the corpus. Every real line has a
constant 1.0 feature, so an all-zero row means padding and the model's ``Masking`` layer can skip it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer

from .paths import atomic_write_bytes

logger = logging.getLogger(__name__)

FEATURES_VERSION = 3  # 3: character 2-4-grams instead of word suffixes
# float16 halves memory (the real corpus: 164k lines x ~1.5k features); TF-IDF needs no more precision.
FEATURE_DTYPE = np.float16

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


def _suffixes(text: str) -> list[str]:
    # Features version 2's analyzer: a bundle saved then pickled its vectorizer with a reference to it.
    return [w[-3:] for w in _words(text)] + ["~" + w[-2:] for w in _words(text)]


def _word_tokens(text: str) -> list[str]:
    return _words(_DIGITS.sub("0", text))


@dataclass
class Featurizer:
    """Fitted vectorisers that turn lines of text into float16 feature rows."""

    max_words: int = 1024
    max_char_grams: int = 1024
    word_vectorizer: TfidfVectorizer | None = None
    char_vectorizer: TfidfVectorizer | None = None

    def __setstate__(self, state: dict) -> None:
        # A featurizer pickled before version 3 (in a saved bundle) named its second block for suffixes.
        if "suffix_vectorizer" in state:
            state["char_vectorizer"] = state.pop("suffix_vectorizer")
            state["max_char_grams"] = state.pop("max_suffixes")
        self.__dict__.update(state)

    def params(self) -> dict:
        """The parameters that define the features (part of the cache key)."""
        return {"max_words": self.max_words, "max_char_grams": self.max_char_grams, "version": FEATURES_VERSION}

    def fit(self, texts: Sequence[str]) -> "Featurizer":
        """Fit both TF-IDF vocabularies on ``texts`` (the training split)."""
        self.word_vectorizer = TfidfVectorizer(
            analyzer=_word_tokens, max_features=self.max_words, min_df=2, sublinear_tf=True,
            dtype=np.float32)
        self.char_vectorizer = TfidfVectorizer(
            analyzer="char_wb", ngram_range=(2, 4), lowercase=True, max_features=self.max_char_grams, min_df=2,
            sublinear_tf=True, dtype=np.float32)
        self.word_vectorizer.fit(texts)
        self.char_vectorizer.fit(texts)
        return self

    @property
    def n_features(self) -> int:
        """Width of a feature row."""
        return (len(self.word_vectorizer.vocabulary_) + len(self.char_vectorizer.vocabulary_)
                + len(SHAPE_NAMES))

    def transform(self, texts: Sequence[str], pad_row: bool = True) -> np.ndarray:
        """Feature rows (float16) for ``texts``; with ``pad_row`` one all-zero row is appended for padding."""
        if self.word_vectorizer is None:
            raise RuntimeError("Featurizer.transform called before fit")
        n = len(texts)
        out = np.zeros((n + int(pad_row), self.n_features), dtype=FEATURE_DTYPE)
        nw = len(self.word_vectorizer.vocabulary_)
        ns = len(self.char_vectorizer.vocabulary_)
        step = 20000  # bounded temporary memory on large corpora
        for lo in range(0, n, step):
            part = texts[lo : lo + step]
            out[lo : lo + len(part), :nw] = self.word_vectorizer.transform(part).toarray()
            out[lo : lo + len(part), nw : nw + ns] = self.char_vectorizer.transform(part).toarray()
            out[lo : lo + len(part), nw + ns :] = np.asarray([shape_features(t) for t in part], dtype=FEATURE_DTYPE)
        return out

    def save(self, path: str | Path) -> None:
        """Pickle the fitted featurizer (written atomically)."""
        atomic_write_bytes(Path(path), pickle.dumps(self))

    @staticmethod
    def load(path: str | Path) -> "Featurizer":
        """Load a featurizer saved by :meth:`save`."""
        with open(path, "rb") as fh:
            return pickle.load(fh)


def cache_key(data_fingerprint: str, split: dict, featurizer: Featurizer) -> str:
    """Cache key: the data, the split and the feature parameters."""
    blob = json.dumps({"data": data_fingerprint, "split": split, "features": featurizer.params()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def build_features(split_texts: dict[str, list[str]], data_fingerprint: str, split: dict,
                   cache_dir: str | Path | None, featurizer: Featurizer | None = None
                   ) -> tuple[Featurizer, dict[str, np.ndarray], bool]:
    """Feature matrices per split, from the cache when possible.

    Returns ``(featurizer, {split: X}, cache_hit)``. Each X has one trailing zero
    row used as the padding index.
    """
    featurizer = featurizer or Featurizer()
    key = cache_key(data_fingerprint, split, featurizer)
    cache = Path(cache_dir) / f"features-{key}" if cache_dir else None
    if cache is not None and (cache / "done").exists():
        mats = {name: np.load(cache / f"{name}.npy") for name in split_texts}
        logger.info(f"features: loaded from the cache {cache}")
        return Featurizer.load(cache / "featurizer.pkl"), mats, True
    logger.info(f"computing features for {sum(len(t) for t in split_texts.values())} lines ...")
    featurizer.fit(split_texts["train"])
    mats = {name: featurizer.transform(texts) for name, texts in split_texts.items()}
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        for name, mat in mats.items():
            tmp = cache / f".{name}.npy.tmp"
            with open(tmp, "wb") as fh:
                np.save(fh, mat)
            os.replace(tmp, cache / f"{name}.npy")
        featurizer.save(cache / "featurizer.pkl")
        (cache / "done").write_text(key)  # written last: a half-written cache is never read
    return featurizer, mats, False
