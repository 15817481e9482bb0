"""The paired comparison behind a recommendation: each candidate's mean difference to no weights over
the same units, with a corrected resampled t interval, and the decision rule."""

from __future__ import annotations

import math

import numpy as np

from ..schemes import UNWEIGHTED

LEVEL = 0.95
POWER = 0.8  # the detectable gain is the one found this often
INTERVAL_METHOD = ("corrected resampled t (Nadeau & Bengio 2003): the variance of the mean difference is "
                   "inflated by held-out/training lines, because units share training data; one interval per "
                   "candidate, no multiplicity correction")


def paired_interval(diffs, test_train_ratio: float, level: float = LEVEL) -> dict:
    """Mean of paired differences over units with a corrected resampled t interval.

    ``test_train_ratio`` is held-out lines / training lines of a unit (about 1/(K-1) for K folds).
    With fewer than 2 units the interval is unbounded: nothing can be claimed.
    """
    from scipy.stats import t as student_t

    d = np.asarray(list(diffs), dtype=np.float64)
    n = len(d)
    mean = float(d.mean()) if n else 0.0
    if n < 2:
        return {"mean": mean, "ci_low": -math.inf, "ci_high": math.inf, "n_units": n}
    se = math.sqrt((1.0 / n + test_train_ratio) * float(d.var(ddof=1)))
    half = float(student_t.ppf(0.5 + level / 2.0, n - 1)) * se
    return {"mean": mean, "ci_low": mean - half, "ci_high": mean + half, "n_units": n}


def decide(candidates: dict[str, dict], test_train_ratio: float, level: float = LEVEL) -> dict:
    """The decision from per-unit scores: ``candidates[name] = {"kind", "scores": {unit: important_f1}}``.

    ``kind`` is ``"unweighted"``, ``"weights"`` or ``"thresholds"``. Each other candidate is compared
    with the unweighted one on the units both have. Weights (or thresholds) are recommended only
    when their interval's lower bound is above 0; among those, the largest mean difference wins.
    Otherwise the decision is ``"no_weights"``.
    """
    base = candidates[UNWEIGHTED]["scores"]
    others = [n for n in candidates if n != UNWEIGHTED]
    rows = [{"candidate": UNWEIGHTED, "kind": "unweighted", "mean": mean_or_nan(base.values()),
             "diff": {"mean": 0.0, "ci_low": 0.0, "ci_high": 0.0, "n_units": len(base)}}]
    for name in others:
        scores = candidates[name]["scores"]
        common = sorted(set(scores) & set(base))
        diff = paired_interval([scores[u] - base[u] for u in common], test_train_ratio, level)
        rows.append({"candidate": name, "kind": candidates[name]["kind"], "mean": mean_or_nan(scores[u] for u in common),
                     "diff": diff})
    clear = [r for r in rows[1:] if r["diff"]["ci_low"] > 0]
    pick = max(clear, key=lambda r: r["diff"]["mean"]) if clear else rows[0]
    decision = {"weights": "weights", "thresholds": "thresholds"}.get(pick["kind"], "no_weights")
    return {"decision": decision, "candidate": pick["candidate"], "diff_vs_unweighted": pick["diff"],
            "level": level, "interval": INTERVAL_METHOD, "candidates": rows}


def detectable(candidates: dict[str, dict], test_train_ratio: float, folds: int, repeats: int,
               level: float = LEVEL) -> dict | None:
    """The gain this design finds 80% of the time at the noise measured (:func:`detectable_gain` over all of no
    weights' units, :func:`unit_noise`), and what twice the repeats would find at that noise (a unit's held-out
    size, and so its noise, does not change with repeats); ``None`` where the noise was not measured."""
    noise = unit_noise(candidates)
    if noise is None:
        return None
    n = len(candidates[UNWEIGHTED]["scores"])
    return {"gain": detectable_gain(noise["sd"], n, test_train_ratio, level), "power": POWER, "sd": noise["sd"],
            "df": noise["df"], "n_units": n, "more_repeats": 2 * repeats,
            "gain_with_more_repeats": detectable_gain(noise["sd"], 2 * repeats * folds, test_train_ratio, level)}



def detectable_gain(sd: float, n_units: int, test_train_ratio: float, level: float = LEVEL,
                    power: float = POWER) -> float:
    """The smallest true mean gain the decision finds with probability ``power``, where the paired unit differences
    have standard deviation ``sd`` over ``n_units`` units: ``(t_(1+level)/2 + t_power) * sqrt(1/n + ratio) * sd``,
    both t with n - 1 degrees of freedom (the usual normal-theory formula with the corrected variance; the
    benchmark of planted gains in docs/benchmarks.md checks it)."""
    from scipy.stats import t as student_t

    if n_units < 2 or not math.isfinite(sd):
        return math.inf
    df = n_units - 1
    return float((student_t.ppf(0.5 + level / 2.0, df) + student_t.ppf(power, df))
                 * math.sqrt(1.0 / n_units + test_train_ratio) * sd)


def unit_noise(candidates: dict[str, dict]) -> dict | None:
    """The noise of the paired unit differences: their standard deviation pooled over every candidate with 2 or
    more units (each candidate's own mean removed), with its degrees of freedom; ``None`` where no candidate ran 2
    units (a race that stopped everyone after one)."""
    base = candidates[UNWEIGHTED]["scores"]
    squares, df = 0.0, 0
    for name, cand in candidates.items():
        if name == UNWEIGHTED:
            continue
        d = np.asarray([cand["scores"][u] - base[u] for u in sorted(set(cand["scores"]) & set(base))])
        if len(d) >= 2:
            squares += float(((d - d.mean()) ** 2).sum())
            df += len(d) - 1
    return {"sd": math.sqrt(squares / df), "df": df} if df else None


def mean_or_nan(values) -> float:
    """The mean of ``values`` (NaN when there are none: a candidate with no finished unit)."""
    values = list(values)
    return float(np.mean(values)) if values else float("nan")
