"""Evaluation units: the (repeat, fold) pairs on which candidates are compared, paired.

The chunks outside the test split (the search's train and validation splits together) are
cut into K folds by chunk, afresh for every repeat r. Unit (r, k) trains on the other K - 1
folds with seed ``seed + r`` and scores fold k. Every candidate is scored on the same units,
so the differences between candidates are paired. The test split is never part of a unit.
Features are the study's, fitted once on the search's training split (TF-IDF uses no labels).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ..config import CLASSES, validate_config
from ..errors import DataError
from ..metrics import compute_stats
from ..windows import offsets_from_sizes

# Fixed, so that the folds of a study are the same in every process and on every resume.
FOLD_SEED = 20_26
UNIT_KEYS = ("important_f1", "Nomenclature_f1", "Description_f1", "Misc_f1")


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
    from ..train import SplitData

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
    from ..train import TrainingData

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
    from ..train import TrainingData

    return TrainingData(_subset(prepared, "train", _pieces(prepared)), None, prepared.featurizer.n_features)


def check_units(prepared, evaluation: dict) -> None:
    """Build every unit the evaluation settings call for (cheap: units index rows) and raise the
    :class:`DataError` a unit would raise, before a study is created or anything is trained."""
    repeats = evaluation["repeats"] * (2 if evaluation.get("design") == "cv" else 1)  # cv confirms on fresh ones
    for unit in make_units(evaluation["folds"], repeats):
        unit_data(prepared, unit, evaluation["folds"])


def unit_config(config: dict, unit: Unit) -> dict:
    """The config a unit trains with: the candidate's, seeded by the unit's repeat."""
    return validate_config(dict(config, seed=int(config["seed"]) + unit.repeat, verbosity=0))


def _scores(stats: dict) -> dict:
    return {k: float(stats[k]) for k in UNIT_KEYS}


def run_unit(data, config: dict, unit: Unit, thresholds: bool = False, seed: int = 0, should_stop=None,
             cache=None, keep=None, epoch_hook=None) -> dict:
    """Train ``config`` on the unit's training folds and score its held-out fold.

    Returns ``{"scores": {...}, "lines": held-out lines, "train_lines": ..., "seconds": ...}``,
    and ``calibration`` (:func:`.posthoc.fit_calibration` on the held-out fold, as a dict) when every
    class is in that fold; with
    ``thresholds``, also the post-hoc threshold competitor on the same model, fitted by 2-way
    cross-fitting inside the held-out fold (fitted on one half of its chunks, scored on the other),
    and the ``multipliers`` fitted on the whole held-out fold.
    ``should_stop``, ``cache`` (a :class:`.model.ModelCache`) and ``epoch_hook`` are passed to
    :func:`.train.train_model`;
    ``keep(model, config)`` is called with the trained model (the confirmation keeps it as a member).
    """
    from ..posthoc import fit_calibration
    from ..train import predict_probs, train_model

    t0 = time.perf_counter()
    cfg = unit_config(config, unit)
    model, _ = train_model(data, cfg, epoch_hook, should_stop=should_stop, cache=cache)
    held = data.val
    probs = predict_probs(model, held, cfg)
    out = {"scores": _scores(compute_stats(held.y, probs)), "lines": int(held.n),
           "train_lines": int(data.train.n), "train_class_counts": data.train.class_counts(),
           "seconds": round(time.perf_counter() - t0, 3)}
    calibration = fit_calibration(probs, held.y)  # the deployed models' calibration (members.py)
    if calibration is not None:
        out["calibration"] = calibration.as_dict()
    if keep is not None:
        keep(model, cfg)
    if thresholds:
        from ..posthoc import fit_adjustment

        out["thresholds"] = _scores(compute_stats(held.y, cross_fitted_adjustment(probs, held, seed)))
        # The multipliers this model's whole held-out fold gives: a "thresholds" decision deploys their mean.
        out["multipliers"] = {c: float(w) for c, w in zip(CLASSES, fit_adjustment(probs, held.y, seed=seed)[0])}
    return out


def cross_fitted_adjustment(probs: np.ndarray, split, seed: int = 0) -> np.ndarray:
    """One-hot predictions of per-class multipliers fitted on alternate chunks, applied to the others.

    Fitting the multipliers on the lines they are scored on would be in-sample; each half of the
    held-out fold's chunks is scored with the multipliers fitted on the other half.
    """
    from ..posthoc import adjusted_predictions
    from ..predict import one_hot_probs

    half = np.zeros(split.n, dtype=bool)
    for i, (lo, hi) in enumerate(zip(split.offsets[:-1], split.offsets[1:])):
        half[lo:hi] = i % 2 == 1
    if half.all() or not half.any():  # a single chunk: no honest fit possible, keep argmax
        return probs
    pred = probs.argmax(axis=1)
    for part in (half, ~half):
        pred[part] = adjusted_predictions(probs[~part], split.y[~part], probs[part], seed=seed)[0]
    return one_hot_probs(pred)
