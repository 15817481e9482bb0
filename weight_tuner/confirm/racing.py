"""Racing confirmation: stop training a candidate once no scores of its remaining units could make it win.

The decision (:func:`.statistics.decide`) recommends a candidate only when the lower bound of its
corrected resampled t interval over all ``n`` units is above 0. After each complete prefix of units
(in the plan's order, which is the order Optuna hands the runs out), :func:`futile` asks whether
*any* scores of the remaining units could still lift that bound above 0. When none can, the
candidate is stopped: its remaining runs are not trained. This is curtailment with certainty, not a
probability: a stopped candidate could not have been recommended, so the decision is the one the full
confirmation would make, and the recommended candidate's interval is still computed on all its units.
When every candidate other than no weights is stopped, the decision is no weights and needs no more
unweighted runs; a plan that deploys every unit (``deploy_every_unit``) still trains them, for the deployed
model's members and calibration, not for the decision.

The race is a function of the per-unit scores alone (never of timing), so every process computes
the same stops, and the report is the same whichever process ran what.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .statistics import LEVEL, decide

# Scores are F1 values, so a paired difference lies in [-1, 1]; the bound is searched over that range.
DIFF_RANGE = (-1.0, 1.0)
# A candidate is stopped only when its best possible bound is below 0 by more than the search's error.
TOLERANCE = 1e-9


def final_lower_bound(diffs, n_total: int, test_train_ratio: float, fill, level: float = LEVEL):
    """The interval's lower bound over ``n_total`` units if every unit still to run scored ``fill``
    (a number, or an array of candidate values: one bound each)."""
    from scipy.stats import t as student_t

    d = np.asarray(diffs, dtype=np.float64)
    x = np.asarray(fill, dtype=np.float64)
    m = n_total - len(d)
    mean = (d.sum() + m * x) / n_total
    var = np.maximum((np.sum(d * d) + m * x * x - n_total * mean * mean) / (n_total - 1), 0.0)
    return mean - float(student_t.ppf(0.5 + level / 2.0, n_total - 1)) * np.sqrt((1.0 / n_total + test_train_ratio) * var)


def best_final_lower_bound(diffs, n_total: int, test_train_ratio: float, level: float = LEVEL) -> float:
    """The highest lower bound the remaining ``n_total - len(diffs)`` units could give.

    The bound depends on the remaining scores through their sum and their sum of squares only; for a
    given sum the squares are smallest (and the bound highest) when they are all equal. So the best
    case is one value repeated, and the bound is concave in it (a mean minus a multiple of a norm):
    a grid over the possible range, refined by a bounded 1-D search, finds its maximum.
    """
    from scipy.optimize import minimize_scalar

    if n_total < 2:
        return -math.inf  # an interval over fewer than 2 units is unbounded: nothing can clear
    diffs = list(diffs)[:n_total]
    if len(diffs) == n_total:
        return float(final_lower_bound(diffs, n_total, test_train_ratio, 0.0, level))
    grid = np.linspace(*DIFF_RANGE, 401)
    values = final_lower_bound(diffs, n_total, test_train_ratio, grid, level)
    i = int(np.argmax(values))
    lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    found = minimize_scalar(lambda x: -float(final_lower_bound(diffs, n_total, test_train_ratio, x, level)),
                            bounds=(lo, hi), method="bounded", options={"xatol": 1e-12})
    return max(float(values[i]), -float(found.fun))


def futile(diffs, n_total: int, test_train_ratio: float, level: float = LEVEL) -> bool:
    """Whether no scores of the remaining units can lift the final interval's lower bound above 0."""
    return best_final_lower_bound(diffs, n_total, test_train_ratio, level) < -TOLERANCE


@dataclass(frozen=True)
class Race:
    """Which unit runs of a confirmation still matter.

    ``stopped`` maps a stopped candidate to the number of units (a prefix of the plan's) it ran before
    the stop; ``base_units`` is how many units of the unweighted candidate the decision needs (all,
    unless every other candidate is stopped). With ``base_all`` the unweighted candidate runs every unit
    whatever the decision needs: its models are the deployed ones when no weights win.
    ``units`` is the plan's unit keys in order.
    """

    units: tuple[str, ...]
    base: str
    stopped: dict[str, int] = field(default_factory=dict)
    base_units: int | None = None
    base_all: bool = False

    def units_of(self, candidate: str) -> tuple[str, ...]:
        """The units whose runs count for ``candidate`` (its prefix if stopped, else every unit)."""
        if candidate == self.base:
            short = self.base_units is not None and not self.base_all
            return self.units[:self.base_units] if short else self.units
        return self.units[:self.stopped.get(candidate, len(self.units))]

    def needed(self, candidate: str, unit: str) -> bool:
        """Whether the run of ``candidate`` on ``unit`` counts (and so must be trained)."""
        return unit in self.units_of(candidate)


def race(units, scores: dict[str, dict[str, float]], test_train_ratio: float, base: str,
         level: float = LEVEL, base_all: bool = False) -> Race:
    """The race over per-unit scores: ``scores[candidate][unit] = important_f1``, ``base`` the unweighted one
    (with ``base_all``, run on every unit: see :class:`Race`).

    A candidate is looked at after each prefix of ``units`` on which it and ``base`` have both
    finished, and stopped at the first prefix where it is :func:`futile`. The last unit is no look:
    there the decision itself speaks.
    """
    units = tuple(units)
    n = len(units)
    stopped: dict[str, int] = {}
    others = [c for c in scores if c != base]
    for name in others:
        for k in range(1, n):
            prefix = units[:k]
            if not all(u in scores[name] and u in scores[base] for u in prefix):
                break
            if futile([scores[name][u] - scores[base][u] for u in prefix], n, test_train_ratio, level):
                stopped[name] = k
                break
    everyone_stopped = bool(others) and all(c in stopped for c in others)
    return Race(units, base, stopped, max(stopped.values()) if everyone_stopped else None, base_all)


def replay(units, candidates: dict[str, dict], test_train_ratio: float, base: str, runs_of_candidate=None,
           level: float = LEVEL, base_all: bool = False) -> dict:
    """Feed a full confirmation's per-unit scores through the race, as if the runs had come in plan order.

    ``candidates[name] = {"kind", "scores": {unit: important_f1}}`` (every unit present);
    ``runs_of_candidate(name)`` says whether a candidate trains runs of its own (the thresholds
    competitor rides on the unweighted runs; default: every candidate does); ``base_all`` counts every
    unweighted run as trained (the deployed model's). Returns the runs planned and trained, the decision
    of the full confirmation and of the raced one.
    """
    units = tuple(units)
    trains = runs_of_candidate or (lambda name: True)
    scores = {name: dict(c["scores"]) for name, c in candidates.items()}
    result = race(units, scores, test_train_ratio, base, level, base_all)
    raced = {name: dict(c, scores={u: c["scores"][u] for u in result.units_of(name)})
             for name, c in candidates.items()}
    planned = sum(len(units) for name in candidates if trains(name))
    trained = sum(len(result.units_of(name)) for name in candidates if trains(name))
    full, short = decide(candidates, test_train_ratio, level), decide(raced, test_train_ratio, level)
    return {"planned": planned, "trained": trained, "saved": planned - trained, "stopped": dict(result.stopped),
            "decision": full["decision"], "candidate": full["candidate"],
            "raced_decision": short["decision"], "raced_candidate": short["candidate"],
            # a recommended candidate keeps every unit, so its interval must be the same too
            "same": (full["decision"], full["candidate"]) == (short["decision"], short["candidate"])
            and (full["decision"] == "no_weights" or full["diff_vs_unweighted"] == short["diff_vs_unweighted"])}
