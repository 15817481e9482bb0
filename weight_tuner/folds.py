"""Evaluation units: the (repeat, fold) pairs on which candidates are compared, paired.

The chunks outside the test split (the search's train and validation splits together) are
cut into K folds by chunk, afresh for every repeat r. Unit (r, k) trains on the other K - 1
folds with seed ``seed + r`` and scores fold k. Every candidate is scored on the same units,
so the differences between candidates are paired. The test split is never part of a unit.
Features are the study's, fitted once on the search's training split (TF-IDF uses no labels).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import CLASSES
from .errors import DataError
from .windows import offsets_from_sizes

# Fixed, so that the folds of a study are the same in every process and on every resume.
FOLD_SEED = 20_26


@dataclass(frozen=True)
class Unit:
    """One evaluation unit: fold ``fold`` held out of the partition drawn for ``repeat``."""

    repeat: int
    fold: int

    @property
    def key(self) -> str:
        return f"r{self.repeat}f{self.fold}"

    @staticmethod
    def from_key(key: str) -> "Unit":
        """The unit named ``r<repeat>f<fold>``."""
        repeat, fold = key[1:].split("f")
        return Unit(int(repeat), int(fold))


def make_units(folds: int, repeats: int, first_repeat: int = 0) -> list[Unit]:
    """All units of ``repeats`` repeats of ``folds``-fold splitting, repeat by repeat."""
    if folds < 2 or repeats < 1:
        raise DataError(f"need --folds >= 2 and --repeats >= 1, got {folds} and {repeats}")
    return [Unit(r, k) for r in range(first_repeat, first_repeat + repeats) for k in range(folds)]


def _pieces(prepared) -> list[tuple[str, int]]:
    """Every non-test chunk as (split name, chunk index within that split)."""
    return [(name, i) for name in ("train", "val") for i in range(len(prepared.splits[name].offsets) - 1)]


def _piece_sizes(prepared, pieces: list[tuple[str, int]]) -> np.ndarray:
    """The number of lines of each of ``pieces``."""
    return np.array([int(np.diff(prepared.splits[s].offsets)[i]) for s, i in pieces])


def check_fold_count(pieces: int, folds: int) -> None:
    """A :class:`DataError` when ``pieces`` non-test chunks are too few for ``folds`` folds."""
    if pieces < folds:
        raise DataError(f"{pieces} non-test chunks cannot be cut into {folds} folds; use fewer --folds")


def fold_of_pieces(prepared, folds: int, repeat: int) -> np.ndarray:
    """The fold of every non-test chunk in ``repeat``'s partition, balanced by lines.

    Chunks are taken in a random order (seeded by the repeat) and each goes to the fold that
    holds the fewest lines so far.
    """
    pieces = _pieces(prepared)
    check_fold_count(len(pieces), folds)
    sizes = _piece_sizes(prepared, pieces)
    order = np.random.default_rng([FOLD_SEED, repeat]).permutation(len(pieces))
    fold = np.empty(len(pieces), dtype=np.int64)
    totals = np.zeros(folds, dtype=np.int64)
    for j in order:
        k = int(np.argmin(totals))
        fold[j] = k
        totals[k] += sizes[j]
    return fold


def _subset(prepared, name: str, pieces: list[tuple[str, int]]):
    """A split made of the given chunks, in their order: a view that indexes the prepared rows."""
    from .train import SplitData

    rows = prepared.splits["train"].rows
    index, ys, sizes, ids = [], [], [], []
    for split_name, i in pieces:
        src = prepared.splits[split_name]
        lo, hi = int(src.offsets[i]), int(src.offsets[i + 1])
        index.append(src.index[lo:hi])
        ys.append(src.y[lo:hi])
        sizes.append(hi - lo)
        ids.append(src.chunk_ids[i])
    offsets = offsets_from_sizes(sizes)
    return SplitData(name, rows, np.concatenate(index + [[rows.pad_row]]).astype(np.int64), np.concatenate(ys),
                     offsets, ids)


def unit_data(prepared, unit: Unit, folds: int):
    """The unit's :class:`.train.TrainingData`: its training folds as ``train``, its held-out fold as ``val``."""
    fold = fold_of_pieces(prepared, folds, unit.repeat)
    pieces = _pieces(prepared)
    train = _subset(prepared, "train", [p for p, f in zip(pieces, fold) if f != unit.fold])
    held = _subset(prepared, "val", [p for p, f in zip(pieces, fold) if f == unit.fold])
    from .train import TrainingData

    counts = train.class_counts()
    missing = [c for c in CLASSES if counts[c] == 0]
    if missing:
        raise DataError(f"unit {unit.key}: class {missing[0]!r} is absent from its training folds; use fewer --folds")
    return TrainingData(train, held, prepared.featurizer.n_features)


def held_train_ratio(prepared, units: list[Unit], folds: int) -> float:
    """Held-out lines over training lines, mean over ``units`` (the interval's correction term), from the
    fold sizes alone: what the decision will use once every unit has run, known before any has."""
    sizes = _piece_sizes(prepared, _pieces(prepared))
    held = [int(sizes[fold_of_pieces(prepared, folds, u.repeat) == u.fold].sum()) for u in units]
    return float(np.mean(held) / np.mean([int(sizes.sum()) - h for h in held]))


def refit_data(prepared):
    """A refit's :class:`.train.TrainingData`: every non-test chunk as ``train``, no validation split."""
    from .train import TrainingData

    return TrainingData(_subset(prepared, "train", _pieces(prepared)), None, prepared.featurizer.n_features)


def check_units(prepared, evaluation: dict) -> None:
    """Build every unit the evaluation settings call for (cheap: units index rows) and raise the
    :class:`DataError` a unit would raise, before a study is created or anything is trained."""
    repeats = evaluation["repeats"] * (2 if evaluation.get("design") == "cv" else 1)  # cv confirms on fresh ones
    for unit in make_units(evaluation["folds"], repeats):
        unit_data(prepared, unit, evaluation["folds"])


