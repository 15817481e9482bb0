"""One wall-clock budget for a whole ``tune`` (``--timeout``), kept in the study so that every process honours it.

``tune --timeout 30m`` stores when the budget ends (the ``time_budget`` user attr; a ``tune`` without
``--timeout`` clears it). Every process of the study, ``tune``, its local workers and remote workers, reads
it before it starts a trial, a unit run or a refit (its safe points) and starts none once it is spent, so
each stops within one trial or unit run of the end. The search stops early enough to leave the time that
the confirmation and the refits are expected to need, estimated from the search's own trials
(:func:`Estimate.of`). The end is an absolute time (seconds since the epoch): processes on other machines
read it with their own clocks, which must agree to within seconds (NTP), as they must for Optuna's
heartbeats too.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass

import optuna
from optuna.trial import TrialState

from .errors import ConfigError

BUDGET_ATTR = "time_budget"
REFIT_FACTOR = 1.3  # a refit trains on every non-test line: about 1.2-1.3x a search trial's lines
MIN_TRIALS = 5  # complete trials before the search's time is estimated (and the search may stop for it)
MARGIN = 1.25  # the rest of a tune beyond its runs: planning, each unit's data, waiting on the slowest process
_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s?)?$")


def parse_duration(text: str) -> float:
    """Seconds in ``90``, ``90s``, ``30m``, ``2h`` or ``1h30m``; a :class:`ConfigError` naming the value otherwise."""
    match = _DURATION.match(text.strip().lower())
    if not text.strip() or match is None or not any(match.groups()):
        raise ConfigError(f"--timeout: expected a duration such as 90s, 30m, 2h or 1h30m, got {text!r}")
    hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    total = hours * 3600 + minutes * 60 + seconds
    if total <= 0:
        raise ConfigError(f"--timeout: expected a duration > 0, got {text!r}")
    return total


@dataclass(frozen=True)
class Budget:
    """When the study's time budget ends (``until``, seconds since the epoch), how it was given, and how many
    refits the ``tune`` that set it will train (every process reserves their time alike)."""

    until: float
    timeout: str
    refits: int = 0
    trials: int | None = None  # the --trials asked for

    def left(self) -> float:
        """Seconds left (negative once spent)."""
        return self.until - time.time()

    def spent(self) -> bool:
        """Whether no new trial, unit run or refit may start."""
        return self.left() <= 0

    @classmethod
    def of(cls, study: optuna.Study) -> "Budget | None":
        """The study's budget as stored now, or ``None`` where the running ``tune`` has none."""
        stored = study.user_attrs.get(BUDGET_ATTR)
        if not stored or stored.get("until") is None:
            return None
        return cls(float(stored["until"]), str(stored["timeout"]), int(stored.get("refits", 0)), stored.get("trials"))


def set_budget(study: optuna.Study, timeout: str | None, refits: int = 0, trials: int | None = None,
               started: float | None = None) -> Budget | None:
    """Start ``tune``'s budget of ``timeout`` (a duration) from ``started`` (seconds since the epoch; default now);
    ``None`` clears an earlier run's. The run's ``trials`` and ``refits`` are stored either way: the estimate of
    the time left reads them."""
    until = None if timeout is None else (started or time.time()) + parse_duration(timeout)
    stored = {"until": until, "timeout": timeout, "refits": refits, "trials": trials}
    if study.user_attrs.get(BUDGET_ATTR) != stored:
        study.set_user_attr(BUDGET_ATTR, stored)
    return Budget.of(study)


def spent(study: optuna.Study) -> bool:
    """Whether the study's budget is spent (never, without one): no trial, unit run or refit may start."""
    budget = Budget.of(study)
    return budget is not None and budget.spent()


@dataclass(frozen=True)
class Estimate:
    """What the rest of a ``tune`` is expected to take, from the search's last ten complete trials: the lower
    median of their seconds and how many ran at once (the most that overlapped)."""

    trial_seconds: float
    parallel: int

    @classmethod
    def of(cls, study: optuna.Study) -> "Estimate | None":
        """The estimate from ``study``'s complete trials; ``None`` before :data:`MIN_TRIALS` (each process's first
        trial also builds its model's graph: a median of the first few is that warm-up)."""
        done = sorted((t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                       if t.datetime_start and t.datetime_complete), key=lambda t: t.datetime_complete)[-10:]
        if len(done) < MIN_TRIALS:
            return None
        spans = [(t.datetime_start.timestamp(), t.datetime_complete.timestamp()) for t in done]
        seconds = sorted(end - start for start, end in spans)[(len(spans) - 1) // 2]
        parallel = max(sum(s <= start < e for s, e in spans) for start, _ in spans)
        return cls(max(seconds, 0.0), max(parallel, 1))

    def seconds(self, runs: int, factor: float = 1.0) -> float:
        """Wall seconds of ``runs`` trial-sized runs shared by the processes seen."""
        return math.ceil(runs / self.parallel) * self.trial_seconds * factor

    def after_search(self, confirm_runs: int, refits: int) -> float:
        """Wall seconds of the confirmation's runs and the refits, once the search ends."""
        return MARGIN * (self.seconds(confirm_runs) + self.seconds(refits, REFIT_FACTOR))


def confirm_runs(evaluation: dict) -> int:
    """The confirmation's unit runs at most: each candidate trained (the top weights and no weights) on every unit."""
    return evaluation["folds"] * evaluation["repeats"] * (evaluation["top"] + 1)


def search_may_go_on(study: optuna.Study, evaluation: dict) -> bool:
    """Whether one more search trial fits in the study's budget and leaves the confirmation and refits their time
    (always, without a budget; a search with no finished trial yet starts its first while any time is left).

    The first process to find that it does not ends the search for every process (``search_over`` in the
    stored budget): an estimate that shrinks later never restarts it, so every process plans the confirmation
    from the same finished trials."""
    stored = study.user_attrs.get(BUDGET_ATTR)
    if not stored or stored.get("until") is None:
        return True
    if stored.get("search_over"):
        return False
    budget, estimate = Budget.of(study), Estimate.of(study)
    if estimate is None:
        fits = not budget.spent()
    else:
        fits = budget.left() >= estimate.seconds(1) + estimate.after_search(confirm_runs(evaluation), budget.refits)
    if not fits:
        study.set_user_attr(BUDGET_ATTR, dict(stored, search_over=True))
    return fits


def refits_fit(study: optuna.Study) -> bool:
    """Whether the refits may start: no budget, or time left for them by the estimate."""
    budget = Budget.of(study)
    if budget is None:
        return True
    estimate = Estimate.of(study)
    return budget.left() >= (estimate.seconds(budget.refits, REFIT_FACTOR) if estimate else 0.0) and not budget.spent()


def time_left(study: optuna.Study, evaluation: dict, finished: int, runs_left: int | None = None) -> float | None:
    """Seconds the rest of the running ``tune`` is expected to take, with ``finished`` search trials done: the
    search's remaining trials, then the confirmation's runs (``runs_left`` of them once it is planned; at most
    every run before) and the refits. ``None`` before the estimate."""
    stored, estimate = study.user_attrs.get(BUDGET_ATTR) or {}, Estimate.of(study)
    if estimate is None:
        return None
    trials = max((stored.get("trials") or 0) - finished, 0)
    runs = confirm_runs(evaluation) if runs_left is None else runs_left
    return estimate.seconds(trials) + estimate.after_search(runs, stored.get("refits", 0))


def minutes(seconds: float) -> str:
    """``about 12 min`` (``under a minute`` below one)."""
    return "under a minute" if seconds < 60 else f"about {round(seconds / 60)} min"
