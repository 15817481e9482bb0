"""Line cues: how one line reads, whatever journal it comes from (features version 4).

Text is compared in Unicode's compatibility form with dashes and quotes folded (:func:`normalise`);
a line's token shapes (:func:`shape_grams`) describe a citation or a measurement without its names;
:func:`document_cues` gives a few layout cues of every line, read against its own document (length
against the document's median, blank lines around it). :mod:`.features` turns them into rows.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Sequence

import numpy as np

_YEAR = re.compile(r"\b(1[789]\d\d|20[0-4]\d)\b")
_MICRONS = re.compile(r"µm|μm|/#m|\bum\b|\bmu\b", re.IGNORECASE)
_NOV = re.compile(r"\b(sp|comb|gen|var|stat|nom)\.\s*nov\b", re.IGNORECASE)
_BINOMIAL = re.compile(r"^[A-Z][a-z]+ [a-z]{3,}\b")
_MEASURE = re.compile(r"\d\s*[-–]\s*\d|\d\s*[×x]\s*\d")

SHAPE_NAMES = ("bias", "upper_frac", "starts_upper", "digit_frac", "microns", "year", "nov", "binomial",
               "measure", "length", "tokens", "ends_period", "starts_digit", "punct_frac", "equals",
               "relative_length", "relative_tokens", "blank_before", "blank_after")
_FOLD = str.maketrans({**{c: "-" for c in "\u2010\u2011\u2012\u2013\u2014\u2015\u2212"},
                       "\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"'})
_SHAPE_TOKEN = re.compile(r"\d+|[^\W\d_]+|[^\w\s]", re.UNICODE)
SHAPE_NGRAMS = 4  # token-shape n-grams of 1 to this many tokens, the line's start and end included


def normalise(text: str) -> str:
    """A line as the features read it: Unicode's compatibility form (ligatures, micro signs, full-width
    forms as plain characters), every dash a hyphen, curly quotes straight."""
    return unicodedata.normalize("NFKC", text).translate(_FOLD)


def _token_shape(token: str) -> str:
    if token.isdigit():
        return "Y" if len(token) == 4 and token[:2] in ("17", "18", "19", "20") else "0"
    if token[0].isalpha():
        if token.isupper():
            return "A" if len(token) == 1 else "AA"
        return "Aa" if token[0].isupper() else "a"
    return token  # punctuation stands for itself


def shape_grams(text: str) -> list[str]:
    """The line's token shapes (``Aa`` a capitalised word, ``a`` a lower-case one, ``AA`` capitals, ``A`` an
    initial, ``0`` a number, ``Y`` a year, punctuation as itself) and their n-grams, from ``^`` to ``$``."""
    tokens = ["^", *(_token_shape(t) for t in _SHAPE_TOKEN.findall(text)), "$"]
    return [" ".join(tokens[i:i + k]) for k in range(1, SHAPE_NGRAMS + 1) for i in range(len(tokens) - k + 1)]


def shape_features(text: str, median_length: float = 0.0, median_tokens: float = 0.0) -> list[float]:
    """Cheap layout cues for one line, each roughly in [0, 1] (up to 2 for lengths); the last two are its
    length and tokens over its document's medians (0 where not given)."""
    n = max(len(text), 1)
    tokens = len(text.split())
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
        min(tokens / 20.0, 2.0),
        float(text.rstrip().endswith(".")),
        float(text[:1].isdigit()),
        sum(not ch.isalnum() and not ch.isspace() for ch in text) / n,
        float("=" in text or "≡" in text),
        min(len(text) / median_length, 2.0) if median_length else 0.0,
        min(tokens / median_tokens, 2.0) if median_tokens else 0.0,
    ]


def document_cues(texts: Sequence[str], sizes: Sequence[int] | None = None,
                  line_nos: Sequence[int] | None = None) -> np.ndarray:
    """:func:`shape_features` of every line, each against the medians of its document, then whether a blank
    (or unread) line stands before and after it: ``sizes`` cut ``texts`` into consecutive documents (``None``:
    all of it is one), ``line_nos`` are the lines' numbers in their files (``None``: no gaps but the
    documents' edges)."""
    sizes = [len(texts)] if sizes is None else list(sizes)
    if sum(sizes) != len(texts):
        raise ValueError(f"document sizes add up to {sum(sizes)} lines, not {len(texts)}")
    if line_nos is not None and len(line_nos) != len(texts):
        raise ValueError(f"{len(line_nos)} line numbers for {len(texts)} lines")
    out, lo = np.zeros((len(texts), len(SHAPE_NAMES)), dtype=np.float32), 0
    for size in sizes:
        doc = texts[lo:lo + size]
        if doc:
            median_length = max(float(np.median([len(t) for t in doc])), 1.0)
            median_tokens = max(float(np.median([len(t.split()) for t in doc])), 1.0)
            out[lo:lo + size, :-2] = [shape_features(t, median_length, median_tokens) for t in doc]
            nos = np.arange(size) if line_nos is None else np.asarray(line_nos[lo:lo + size])
            apart = np.diff(nos) > 1
            out[lo:lo + size, -2] = np.concatenate([[True], apart])
            out[lo:lo + size, -1] = np.concatenate([apart, [True]])
        lo += size
    return out
