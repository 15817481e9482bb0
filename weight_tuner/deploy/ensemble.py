"""The deployed ensemble: the recommended candidate's confirmation models, their calibration, their mean."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..posthoc import Calibration, apply_multipliers, calibrated_mean
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
    from ..bundles import load_bundle

    loaded = ((model, cfg) for model, _, cfg in map(load_bundle, bundles))
    return apply_multipliers(calibrated_mean(loaded, split, calibration), multipliers)


