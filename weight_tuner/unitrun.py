"""One unit run: train a candidate on a unit's training folds and score its held-out fold."""

from __future__ import annotations

import time

import numpy as np

from .config import CLASSES, ModelConfig
from .folds import Unit
from .metrics import compute_stats
from .posthoc import adjusted_predictions, fit_adjustment, fit_calibration

UNIT_KEYS = ("important_f1", "Nomenclature_f1", "Description_f1", "Misc_f1")


def unit_config(config: ModelConfig | dict, unit: Unit) -> ModelConfig:
    """The config a unit trains with: the candidate's (a plan stores it as a dict), seeded by the unit's repeat."""
    config = ModelConfig.of(config)
    return config.replace(seed=config.seed + unit.repeat, verbosity=0)


def _scores(stats: dict) -> dict:
    return {k: float(stats[k]) for k in UNIT_KEYS}


def run_unit(data, config: ModelConfig | dict, unit: Unit, *, thresholds: bool = False, seed: int = 0, should_stop=None,
             cache=None, keep=None, epoch_hook=None) -> dict:
    """Train ``config`` on the unit's training folds and score its held-out fold.

    Returns ``{"scores": {...}, "lines": held-out lines, "train_lines": ..., "seconds": ...}``,
    and ``calibration`` (:func:`.posthoc.fit_calibration` on the held-out fold, as a dict) when every
    class is in that fold; with
    ``thresholds``, also the post-hoc threshold competitor on the same model, fitted by 2-way
    cross-fitting inside the held-out fold (fitted on one half of its chunks, scored on the other),
    and the ``multipliers`` fitted on the whole held-out fold.
    ``should_stop``, ``cache`` (a :class:`.model.ModelCache`) and ``epoch_hook`` are passed to
    :func:`.train.train_model`, which does not score the epochs (the held-out fold is scored once, after
    training), so ``epoch_hook`` gets ``None`` stats;
    ``keep(model, config)`` is called with the trained model (the confirmation keeps it as a member).
    """
    from .train import predict_probs, train_model

    t0 = time.perf_counter()
    cfg = unit_config(config, unit)
    model, _ = train_model(data, cfg, epoch_hook, should_stop=should_stop, cache=cache, score_epochs=False)
    held = data.val
    probs = predict_probs(model, held, cfg)
    out = {"scores": _scores(compute_stats(held.y, probs)), "lines": int(held.n),
           "train_lines": int(data.train.n), "train_class_counts": data.train.class_counts(),
           "seconds": round(time.perf_counter() - t0, 3)}
    calibration = fit_calibration(probs, held.y)  # the deployed models' calibration (confirm/deployed.py)
    if calibration is not None:
        out["calibration"] = calibration.as_dict()
    if keep is not None:
        keep(model, cfg)
    if thresholds:
        out["thresholds"] = _scores(compute_stats(held.y, cross_fitted_adjustment(probs, held, seed)))
        # The multipliers this model's whole held-out fold gives: a "thresholds" decision deploys their mean.
        out["multipliers"] = {c: float(w) for c, w in zip(CLASSES, fit_adjustment(probs, held.y, seed=seed)[0])}
    return out


def cross_fitted_adjustment(probs: np.ndarray, split, seed: int = 0) -> np.ndarray:
    """One-hot predictions of per-class multipliers fitted on alternate chunks, applied to the others.

    Fitting the multipliers on the lines they are scored on would be in-sample; each half of the
    held-out fold's chunks is scored with the multipliers fitted on the other half.
    """
    from .predict import one_hot_probs

    half = np.zeros(split.n, dtype=bool)
    for i, (lo, hi) in enumerate(zip(split.offsets[:-1], split.offsets[1:])):
        half[lo:hi] = i % 2 == 1
    if half.all() or not half.any():  # a single chunk: no honest fit possible, keep argmax
        return probs
    pred = probs.argmax(axis=1)
    for part in (half, ~half):
        pred[part] = adjusted_predictions(probs[~part], split.y[~part], probs[part], seed=seed)[0]
    return one_hot_probs(pred)
