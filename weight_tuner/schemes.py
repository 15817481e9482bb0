"""Weight schemes: the named class weights a study starts from, and the names of its two reference candidates.

The unweighted model (no weights) is the reference every candidate is paired against; "thresholds" is
the unweighted model with per-class probability multipliers. Both names are used by the search, the
confirmation and every view, so they live here, below all of them.
"""

from __future__ import annotations

import math

from .config import CLASSES

UNWEIGHTED = "unweighted"
THRESHOLDS = "thresholds"


def weights_key(weights: dict | None) -> tuple:
    """One candidate's identity: its trained (normalised) weights' logarithms, rounded, in class order (``None``,
    no weights, is all zeros), so that two trials with the same ratios are one candidate."""
    return tuple(round(math.log(weights[c]), 6) for c in CLASSES) if weights else (0.0,) * len(CLASSES)

GUIDE_SCHEMES: dict[str, dict[str, float]] = {
    "unweighted": {"Nomenclature": 1.0, "Description": 1.0, "Misc": 1.0},
    "guide_recommended_100_10_0.1": {"Nomenclature": 100.0, "Description": 10.0, "Misc": 0.1},
    "guide_balanced_50_50_0.1": {"Nomenclature": 50.0, "Description": 50.0, "Misc": 0.1},
    "guide_critical_100_20_0.01": {"Nomenclature": 100.0, "Description": 20.0, "Misc": 0.01},
    "guide_iteration1_10_5_1": {"Nomenclature": 10.0, "Description": 5.0, "Misc": 1.0},
    "guide_iteration2_50_10_0.5": {"Nomenclature": 50.0, "Description": 10.0, "Misc": 0.5},
    "guide_iteration3_30_10_0.5": {"Nomenclature": 30.0, "Description": 10.0, "Misc": 0.5},
}


# beta 0.99 and 0.999 give uniform weights once every class has thousands of lines (beta^n ~ 0);
# these two still differ between classes at SKOL's counts (7k / 27k / 130k lines).
EFFECTIVE_NUMBER_BETAS = (0.9999, 0.99999)


def count_schemes(counts: dict[str, int]) -> dict[str, dict[str, float]]:
    """Weights derived from the training split's class counts."""
    n = {c: float(counts[c]) for c in CLASSES}
    total = sum(n.values())
    out = {
        "inverse_frequency": {c: max(n.values()) / n[c] for c in CLASSES},
        "balanced": {c: total / (len(CLASSES) * n[c]) for c in CLASSES},
        "sqrt_inverse_frequency": {c: math.sqrt(max(n.values()) / n[c]) for c in CLASSES},
    }
    for beta in EFFECTIVE_NUMBER_BETAS:
        # Effective number of samples (Cui et al. 2019): weight = (1 - beta) / (1 - beta^n).
        out[f"effective_number_{beta}"] = {c: (1 - beta) / (1 - beta ** n[c]) for c in CLASSES}
    return out


def warm_start_schemes(train_counts: dict[str, int]) -> dict[str, dict[str, float]]:
    """All baseline schemes, in the order they are enqueued (unweighted first)."""
    return {**GUIDE_SCHEMES, **count_schemes(train_counts)}


def group_schemes(schemes: dict[str, dict[str, float]], train_counts: dict[str, int]) -> list[list[str]]:
    """Scheme names grouped by the weights they train with (normalised), in order of first appearance.

    ``inverse_frequency`` and ``balanced`` have the same ratios, so they are one point and train once.
    """
    from .model import normalise_weights

    groups: dict[tuple, list[str]] = {}
    for name, weights in schemes.items():
        trained = normalise_weights(weights, train_counts)
        groups.setdefault(tuple(trained[c] for c in CLASSES), []).append(name)
    return list(groups.values())


def is_unweighted(trial) -> bool:
    """Whether a trial is the study's unweighted baseline (the ``unweighted`` scheme)."""
    return trial.user_attrs.get("scheme") == UNWEIGHTED
