"""The deployed ensemble: the recommended candidate's confirmation models, their calibration, their mean."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..posthoc import Calibration, apply_calibration, apply_multipliers
from ..records import Deployed


def stored_calibration(deployed: Deployed | None) -> Calibration | None:
    """The calibration a recommendation's deployed models hold (``None``: none, or no deployed models)."""
    return Calibration.from_dict(deployed.calibration) if deployed and deployed.calibration else None


def class_fractions(counts: dict[str, int]) -> dict[str, float]:
    """Class counts as fractions (a training split's class balance)."""
    total = sum(counts.values())
    return {c: counts[c] / total for c in counts}


def mean_fractions(all_counts: list[dict[str, int]]) -> dict[str, float]:
    """The mean class balance over several training sets (an ensemble's members)."""
    fractions = [class_fractions(c) for c in all_counts]
    return {c: sum(f[c] for f in fractions) / len(fractions) for c in fractions[0]}


def ensemble_probs(bundles: list[Path], split, multipliers: dict | None = None,
                   calibration: Calibration | None = None) -> np.ndarray:
    """The mean of the bundles' per-line probabilities on ``split``, each calibrated first (with
    ``calibration``), the mean re-weighted by ``multipliers``."""
    from ..train import predict_probs
    from ..bundles import load_bundle

    probs = []
    for path in bundles:
        model, _, cfg = load_bundle(path)
        probs.append(apply_calibration(predict_probs(model, split, cfg), calibration))
    return apply_multipliers(np.mean(probs, axis=0), multipliers)


