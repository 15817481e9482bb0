"""When the search has found its candidates: the rule of ``tune --trials auto``.

The confirmation reads only the search's top distinct weight vectors (``--confirm-top``, 3 by default), so
a trial matters to the decision only if it changes them. A trial *moves* the candidates when it enters the
top by more than the validation score's own noise: it fills an empty place, or beats the weakest candidate as it
stood at the last move by more than ``delta``, the binomial standard deviation of important_f1 on the validation
lines at the best trial's per-class F1. A trial that enters by less is a tie the confirmation cannot tell apart
either.
The search stops once ``patience`` finished trials in a row have not moved the candidates, from
``min_trials`` on, and at ``max_trials`` whatever happens. docs/architecture.md gives the reasons for each
number; ``benchmarks/replay_stopping.py`` replays the rule over stored studies.

Trials are read in the order of their numbers, and only the prefix in which every trial has finished, so
every process of a study, and a rerun after a stop, reaches the same verdict from the same trials. The
first process that finds the search done stores it (the ``search_done`` user attr); the others read it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import optuna
from optuna.trial import TrialState

from ..config import CLASSES
from ..errors import ConfigError
from ..schemes import weights_key
from ..storage import trial_score

DONE_ATTR = "search_done"
RULE_ATTR = "stopping_rule"
IMPORTANT = tuple(c for c in CLASSES if c != "Misc")


@dataclass(frozen=True)
class StoppingRule:
    """``--trials auto``: stop after ``patience`` finished trials that did not move the top ``top`` candidates by
    more than the validation noise, from ``min_trials`` on; never beyond ``max_trials``."""

    max_trials: int = 40
    patience: int = 8
    min_trials: int = 16
    top: int = 3

    def __post_init__(self) -> None:
        if self.max_trials < 1:
            raise ConfigError(f"--max-trials: expected an integer >= 1, got {self.max_trials}")
        if self.patience < 1 or self.top < 1:
            raise ConfigError(f"stopping rule: patience and top must be >= 1, got {self.patience}, {self.top}")

    def as_dict(self) -> dict:
        """The rule as the study stores it."""
        return {"max_trials": self.max_trials, "patience": self.patience, "min_trials": self.min_trials,
                "top": self.top}

    @classmethod
    def of(cls, study: optuna.Study) -> "StoppingRule | None":
        """The rule the running ``tune`` stored, or ``None`` where it asked for a fixed number of trials."""
        stored = study.user_attrs.get(RULE_ATTR)
        return None if not stored else cls(**stored)


@dataclass(frozen=True)
class Step:
    """One finished trial as the rule reads it: its validation score (``None``: pruned or no score) and the key of
    its trained weight vector (trials with the same ratios are one candidate)."""

    score: float | None
    key: tuple


def validation_noise(f1: dict[str, float], counts: dict[str, int]) -> float:
    """The binomial standard deviation of important_f1 (the mean of the important classes' F1) with per-class F1
    ``f1`` on a validation split with ``counts`` lines per class: each class's F1 read as a proportion of its
    lines, with one success and one failure added (Laplace), so that a perfect score on 4 lines does not read as
    no noise."""
    var = 0.0
    for c in IMPORTANT:
        n = max(counts.get(c, 0), 1)
        p = (f1[c] * n + 1.0) / (n + 2.0)
        var += p * (1.0 - p) / n
    return math.sqrt(var) / len(IMPORTANT)


def moves(steps: Sequence[Step], top: int, delta: float) -> list[int]:
    """Positions in ``steps`` of the trials that moved the top ``top`` distinct candidates: a weight vector not
    among them that fills an empty place, or beats by more than ``delta`` the last place as it stood at the last
    move (so that entries each within the noise, which add up to more, count once they do). No weights is no
    candidate: the confirmation compares every candidate with it whatever the search found."""
    best: dict[tuple, float] = {}  # candidate key -> its best score so far
    reference, out = -math.inf, []
    for i, step in enumerate(steps):
        if step.score is None or step.key == weights_key(None):
            continue
        leaders = sorted(best, key=best.get, reverse=True)[:top]
        moved = step.key not in leaders and (len(leaders) < top or step.score > reference + delta)
        best[step.key] = max(best.get(step.key, -math.inf), step.score)
        if moved:
            out.append(i)
            ranked = sorted(best.values(), reverse=True)
            reference = ranked[top - 1] if len(ranked) >= top else -math.inf
    return out


def stop_after(steps: Sequence[Step], rule: StoppingRule, delta: float) -> int | None:
    """How many finished trials the rule stops the search at (``None``: not within ``steps``)."""
    moved = moves(steps, rule.top, delta)
    for n in range(1, len(steps) + 1):
        last_move = max((i + 1 for i in moved if i < n), default=0)
        if n >= rule.max_trials or (n >= rule.min_trials and n - last_move >= rule.patience):
            return n
    return None


def finished_prefix(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The finished trials in number order, up to the first trial that is not finished (running, waiting);
    failed trials are left out (they are retried as new trials)."""
    out = []
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        if t.state == TrialState.FAIL:
            continue
        if t.state not in (TrialState.COMPLETE, TrialState.PRUNED):
            break
        out.append(t)
    return out


def steps_of(trials: Sequence[optuna.trial.FrozenTrial]) -> list[Step]:
    """The rule's view of finished trials."""
    return [Step(trial_score(t) if t.state == TrialState.COMPLETE else None,
                 weights_key(t.user_attrs.get("class_weights_trained", t.user_attrs.get("class_weights"))))
            for t in trials]


def study_noise(study: optuna.Study, trials: Sequence[optuna.trial.FrozenTrial]) -> float | None:
    """:func:`validation_noise` at the best of ``trials`` (``None`` before a complete one)."""
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if not complete:
        return None
    best = max(complete, key=trial_score)
    f1 = {c: float(best.user_attrs.get(f"val_{c}_f1", 0.0)) for c in IMPORTANT}
    counts = (study.user_attrs.get("class_counts") or {}).get("val", {})
    return validation_noise(f1, counts)


def trials_asked(trials: int | str, max_trials: int, evaluation: dict) -> tuple[int, StoppingRule | None]:
    """``--trials`` as the search runs it: the most trials the study holds, and the rule (``None`` for a fixed
    number). A :class:`ConfigError` for ``auto`` with the cross-validated design, whose trial scores are unit means,
    not one validation split's."""
    if trials != "auto":
        return int(trials), None
    if evaluation["design"] != "confirm":
        raise ConfigError("--trials auto needs --design confirm: its rule reads the noise of one validation split")
    rule = StoppingRule(max_trials=max_trials, top=evaluation["top"])
    return rule.max_trials, rule


def set_rule(study: optuna.Study, rule: StoppingRule | None) -> None:
    """Store the running ``tune``'s rule for every process of the study (``None``: a fixed number of trials); a
    changed rule also clears an earlier run's verdict, which the new rule reaches again from the same trials."""
    stored = None if rule is None else rule.as_dict()
    if study.user_attrs.get(RULE_ATTR) != stored:
        study.set_user_attr(RULE_ATTR, stored)
        if study.user_attrs.get(DONE_ATTR) is not None:
            study.set_user_attr(DONE_ATTR, None)


def stop_line(study: optuna.Study) -> str:
    """Why the search stopped where ``--trials auto`` stopped it (empty otherwise), for ``tune``'s summary line."""
    done, rule = study.user_attrs.get(DONE_ATTR), StoppingRule.of(study)
    if not done or rule is None:
        return ""
    if done["trials"] >= rule.max_trials:
        return f"; --trials auto: stopped at --max-trials {rule.max_trials}"
    return (f"; --trials auto: the last {rule.patience} moved none of the top {rule.top} candidates by more than "
            f"{done['delta']:.4f} (the validation noise), the last that did was trial {done['last_move']}")


def search_done(study: optuna.Study) -> int | None:
    """The finished trials at which ``--trials auto`` ended the search, or ``None`` while it goes on (and always
    without the rule). The first process to find it stores it, so all processes stop at one count."""
    attrs = study.user_attrs  # one read of the storage: every process asks before each trial
    if not attrs.get(RULE_ATTR):
        return None
    if attrs.get(DONE_ATTR) is not None:
        return int(attrs[DONE_ATTR]["trials"])
    rule, trials = StoppingRule(**attrs[RULE_ATTR]), finished_prefix(study)
    steps, delta = steps_of(trials), study_noise(study, trials)
    at = None if delta is None else stop_after(steps, rule, delta)
    if at is None:
        return None
    moved = [trials[i].number for i in moves(steps[:at], rule.top, delta)]
    study.set_user_attr(DONE_ATTR, {"trials": at, "delta": round(delta, 6), "last_move": moved[-1] if moved else None,
                                    "max_trials": rule.max_trials})
    return at

