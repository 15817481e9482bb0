"""Evaluation units: the (repeat, fold) pairs on which candidates are compared, paired.

The chunks outside the test split (the search's train and validation splits together) are
cut into K folds, afresh for every repeat r: by chunk, or by whole volumes or journals
(``--units-by``), so that a unit scores text from groups its training folds hold no line of.
Unit (r, k) trains on the other K - 1 folds with seed ``seed + r`` and scores fold k. Every
candidate is scored on the same units, so the differences between candidates are paired. The
test split is never part of a unit. Features are the study's, fitted once on the search's
training split (TF-IDF uses no labels).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import CLASSES
from .corpus import group_of
from .errors import DataError
from .windows import offsets_from_sizes

# Fixed, so that the folds of a study are the same in every process and on every resume.
FOLD_SEED = 20_26
UNITS_BY = ("chunk", "volume", "journal")  # what a fold holds whole
# Folds of whole groups: random orders are drawn until the heaviest fold holds at most this many times the
# lines of the lightest, else the most balanced of GROUP_DRAWS orders is kept.
MAX_FOLD_RATIO = 1.5
GROUP_DRAWS = 256


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


def chunk_group(chunk_id: str, by: str) -> str:
    """The group a chunk's fold holds whole: the chunk itself, or its document's volume or journal."""
    return chunk_id if by == "chunk" else group_of(chunk_id.rsplit("#", 1)[0], by)


def check_fold_count(chunk_ids: list[str], folds: int, by: str = "chunk") -> None:
    """A :class:`DataError` when the non-test chunks ``chunk_ids`` hold too few groups for ``folds`` folds."""
    if by not in UNITS_BY:
        raise DataError(f"--units-by: unknown {by!r}; choose from {', '.join(UNITS_BY)}")
    groups = {chunk_group(c, by) for c in chunk_ids}
    if len(groups) < folds:
        what = "chunks" if by == "chunk" else f"{by}s ({', '.join(sorted(groups))})"
        raise DataError(f"{len(groups)} non-test {what} cannot be cut into {folds} folds; use fewer --folds"
                        + ("" if by == "chunk" else " or another --units-by"))


def _greedy(sizes: np.ndarray, order: np.ndarray, folds: int) -> tuple[np.ndarray, np.ndarray]:
    """Each item in ``order`` to the fold that holds the fewest lines so far: ``(fold of each item, fold totals)``."""
    fold = np.empty(len(sizes), dtype=np.int64)
    totals = np.zeros(folds, dtype=np.int64)
    for j in order:
        k = int(np.argmin(totals))
        fold[j] = k
        totals[k] += sizes[j]
    return fold, totals


def fold_of_pieces(prepared, folds: int, repeat: int, by: str = "chunk") -> np.ndarray:
    """The fold of every non-test chunk in ``repeat``'s partition, balanced by lines.

    By chunk, chunks are taken in a random order (seeded by the repeat) and each goes to the fold that
    holds the fewest lines so far. By volume or journal, whole groups are dealt the same way; groups are
    few and uneven (a volume of 1 file beside one of 54), so orders are drawn until the heaviest fold holds
    at most :data:`MAX_FOLD_RATIO` times the lines of the lightest (the most balanced of
    :data:`GROUP_DRAWS` otherwise). Each repeat draws its own orders, so repeats may cut differently.
    """
    pieces = _pieces(prepared)
    ids = [prepared.splits[s].chunk_ids[i] for s, i in pieces]
    check_fold_count(ids, folds, by)
    sizes = _piece_sizes(prepared, pieces)
    rng = np.random.default_rng([FOLD_SEED, repeat])
    if by == "chunk":
        return _greedy(sizes, rng.permutation(len(pieces)), folds)[0]
    names, group = np.unique([chunk_group(c, by) for c in ids], return_inverse=True)
    group_sizes = np.bincount(group, weights=sizes, minlength=len(names)).astype(np.int64)
    return balanced_folds(group_sizes, folds, rng)[group]


def balanced_folds(sizes: np.ndarray, folds: int, rng: np.random.Generator) -> np.ndarray:
    """The fold of each of a few uneven groups of ``sizes`` lines: the first random order (of at most
    :data:`GROUP_DRAWS`) whose greedy deal leaves the heaviest fold within :data:`MAX_FOLD_RATIO` of the
    lightest, else the most balanced deal drawn."""
    best, best_ratio = None, np.inf
    for _ in range(GROUP_DRAWS):
        fold, totals = _greedy(sizes, rng.permutation(len(sizes)), folds)
        ratio = totals.max() / max(totals.min(), 1)
        if ratio < best_ratio:
            best, best_ratio = fold, ratio
        if ratio <= MAX_FOLD_RATIO:
            break
    return best


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


def unit_data(prepared, unit: Unit, folds: int, by: str = "chunk"):
    """The unit's :class:`.train.TrainingData`: its training folds as ``train``, its held-out fold as ``val``
    (folds of chunks, or of whole volumes or journals: ``by``)."""
    fold = fold_of_pieces(prepared, folds, unit.repeat, by)
    pieces = _pieces(prepared)
    train = _subset(prepared, "train", [p for p, f in zip(pieces, fold) if f != unit.fold])
    held = _subset(prepared, "val", [p for p, f in zip(pieces, fold) if f == unit.fold])
    from .train import TrainingData

    counts = train.class_counts()
    missing = [c for c in CLASSES if counts[c] == 0]
    if missing:
        raise DataError(f"unit {unit.key}: class {missing[0]!r} is absent from its training folds; use fewer --folds")
    return TrainingData(train, held, prepared.featurizer.n_features)


def held_train_ratio(prepared, units: list[Unit], folds: int, by: str = "chunk") -> float:
    """Held-out lines over training lines, mean over ``units`` (the interval's correction term), from the
    fold sizes alone: what the decision will use once every unit has run, known before any has."""
    sizes = _piece_sizes(prepared, _pieces(prepared))
    held = [int(sizes[fold_of_pieces(prepared, folds, u.repeat, by) == u.fold].sum()) for u in units]
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
        unit_data(prepared, unit, evaluation["folds"], evaluation.get("units_by", "chunk"))


