"""Taking unit runs: every process of a study trains the confirmation's waiting (candidate, unit) trials.

A process takes one waiting trial of the companion study at a time, as Optuna hands them out, trains it
(:func:`..unitrun.run_unit`) and stores its scores as user attrs; a run whose candidate was raced out is
pruned instead of trained. ``tune`` waits until every needed run is finished; a ``worker`` leaves when
none is left to take.
"""

from __future__ import annotations

import logging
import os
import socket
import time

import optuna
from optuna.trial import TrialState

from ..artifacts import save_member
from ..errors import NonFiniteLossError, StudyError
from ..folds import Unit, unit_data
from ..schemes import UNWEIGHTED
from ..retries import NothingLeft, StaleTrials, abandon_trial, retry_attrs, take_waiting
from ..storage import storage_of
from ..unitrun import run_unit
from .plan import missing_runs, plan_ratio, race_of, run_params, units_by
from .racing import Race

logger = logging.getLogger(__name__)


class UnitRun:
    """The objective of a unit trial: train its candidate on its unit's training folds, score the held-out fold.

    A run that the race no longer needs (its candidate was stopped) is pruned before it trains, or after
    the epoch during which another process's result stopped its candidate."""

    def __init__(self, prepared, plan: dict, stop=None, members=None):
        self.prepared, self.plan, self.stop, self.members = prepared, plan, stop, members
        self.ratio = plan_ratio(prepared, plan)
        self.cache = prepared.models
        self._data: tuple[str, object] | None = None  # the current unit's view of the rows

    def _stop_if_raced_out(self, trial: optuna.Trial, name: str, key: str, epoch: int | None = None) -> None:
        """Prune the run when the race no longer needs it: before it trains, and after each epoch (another
        process may have finished the run that stopped its candidate meanwhile)."""
        if self.plan.get("racing") and not race_of(trial.study, self.plan, self.ratio).needed(name, key):
            when = "before training" if epoch is None else f"after epoch {epoch + 1}"
            trial.set_user_attr("raced_out", f"its candidate was stopped ({when}): no scores of its remaining "
                                             "units could make it win (racing)")
            raise optuna.TrialPruned()

    def __call__(self, trial: optuna.Trial) -> float:
        name, key = trial.user_attrs.get("candidate"), trial.user_attrs.get("unit")
        if name is None or key is None:
            trial.set_user_attr("fail_reason", "no unit run was left to take (another process took the last)")
            raise NothingLeft()
        own = storage_of(trial.study).get_trial(trial._trial_id)
        twin = _twin(trial, own, name, key)
        if twin is not None:
            trial.set_user_attr("fail_reason", f"a duplicate of unit run #{twin.number} ({twin.state.name}): the run "
                                               "was queued twice, and is trained once")
            raise NothingLeft()
        if own.system_attrs.get("fixed_params"):
            # the values it was queued with, recorded as its parameters (runs queued before they had none)
            for param, distribution in run_params(self.plan, name, key)[1].items():
                trial.suggest_categorical(param, distribution.choices)
        self._stop_if_raced_out(trial, name, key)
        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("pid", os.getpid())
        unit = Unit.from_key(key)
        if self._data is None or self._data[0] != key:
            self._data = None  # free the previous unit's view before building the next
            self._data = (key, unit_data(self.prepared, unit, self.plan["folds"], units_by(self.plan)))
        if self.stop is not None:
            self.stop.abandon = lambda: abandon_trial(trial)

        keep = None
        if self.members is not None:  # the model may become a member of the deployed ensemble
            keep = lambda model, cfg: save_member(trial, model, self.prepared.featurizer, cfg,  # noqa: E731
                                                  self.prepared.label_map, self.members)
        try:
            res = run_unit(self._data[1], self.plan["candidates"][name]["config"], unit,
                           thresholds=name == UNWEIGHTED, seed=unit.repeat,
                           should_stop=self.stop.check if self.stop is not None else None, cache=self.cache,
                           keep=keep, epoch_hook=lambda epoch, stats: self._stop_if_raced_out(trial, name, key, epoch))
        except KeyboardInterrupt as exc:
            trial.set_user_attr("fail_reason", f"interrupted ({type(exc).__name__})")
            give_back(trial.study, trial)
            raise
        except NonFiniteLossError as exc:  # the same run would fail again: not queued, named by the wait
            trial.set_user_attr("fail_reason", str(exc))
            raise
        for k in ("scores", "lines", "train_lines", "train_class_counts", "calibration", "seconds", "thresholds",
                  "multipliers"):
            if k in res:
                trial.set_user_attr(k, res[k])
        return res["scores"]["important_f1"]


def _twin(trial: optuna.Trial, own, name: str, key: str):
    """Another trial of the same run that goes first: finished, or alive with a lower number (``own`` is the
    trial as stored). Two planners may both queue a run (a joiner that waited out :data:`.plan.ENQUEUE_GRACE_S`
    for a slow one); of its copies only the lowest-numbered live one trains, so no run is trained twice and none
    by nobody. The trial a retry replaces is no twin: it may still read RUNNING a moment after its process queued
    the retry."""
    replaced = {own.number, own.user_attrs.get("retry_of"), own.system_attrs.get("failed_trial")}
    for other in trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING,
                                                                 TrialState.WAITING)):
        if other.number not in replaced and (other.user_attrs.get("candidate"), other.user_attrs.get("unit")) == (
                name, key) and (other.state == TrialState.COMPLETE or other.number < trial.number):
            return other
    return None


def give_back(companion: optuna.Study, trial) -> None:
    """Enqueue a unit run that will not finish again in its place in the queue, marked ``retry_of`` its number."""
    frozen = storage_of(companion).get_trial(trial._trial_id)  # a live Trial has no system attrs to read
    companion.enqueue_trial(frozen.system_attrs.get("fixed_params") or {},
                            user_attrs={"candidate": frozen.user_attrs["candidate"], "unit": frozen.user_attrs["unit"],
                                        **retry_attrs(frozen)})


def take_runs(companion: optuna.Study, plan: dict, prepared, stop=None, after_run=None, members=None,
              may_start=None) -> int:
    """Take waiting unit runs of ``companion`` one at a time until none is left (or ``may_start()`` is false: the
    study's time budget is spent); return how many this process ran. ``after_run(trial)`` is called after each
    finished run; with ``members`` (a folder) each run's model is kept there as an artifact of its trial
    (:func:`..artifacts.save_member`)."""

    objective = UnitRun(prepared, plan, stop, members)
    ran = 0
    for trial in take_waiting(companion, objective, stop, catch=(NonFiniteLossError,), may_start=may_start):
        if stop is not None:
            stop.abandon = None
        if trial is None or trial.state != TrialState.COMPLETE:
            continue
        ran += 1
        logger.info(f"unit run {trial.user_attrs['candidate']} on {trial.user_attrs['unit']}: important_f1 "
                    f"{trial.value:.4f} ({trial.user_attrs['seconds']:.0f}s)")
        if after_run is not None:
            after_run(trial)
    return ran


def wait_for_runs(companion: optuna.Study, plan: dict, prepared, *, stop=None, after_run=None,
                  poll_seconds: float = 1.0, members=None, may_start=None) -> Race:
    """Take runs until every run of the plan that the race still needs has finished, here or in other
    processes, or until ``may_start()`` is false (the time budget is spent: what finished is decided on);
    return the final :class:`.racing.Race`.

    While others hold the last runs, stale ones (a killed worker's) are failed and queued again by
    Optuna's heartbeat callback, and taken here. A run that failed for good is a :class:`StudyError`.
    """
    ratio = plan_ratio(prepared, plan)
    said, seen_lost, stale = None, None, StaleTrials(companion)
    while True:
        take_runs(companion, plan, prepared, stop, after_run, members, may_start)
        counted = race_of(companion, plan, ratio)
        if may_start is not None and not may_start():
            return counted
        pending, lost = missing_runs(companion, plan, counted)
        if lost and lost != seen_lost:  # look once more: a failed run's retry is queued a moment after its failure
            seen_lost = lost
            time.sleep(poll_seconds)
            continue
        if lost:
            fails = [t for t in companion.get_trials(deepcopy=False, states=(TrialState.FAIL,))
                     if (t.user_attrs.get("candidate"), t.user_attrs.get("unit")) == lost[0]]
            reason = fails[-1].user_attrs.get("fail_reason", "see the log") if fails else "unknown"
            raise StudyError(f"unit run {lost[0][0]} on {lost[0][1]} failed and is not queued again ({reason}); "
                             f"study {companion.study_name!r}")
        if not pending:
            return counted
        if stop is not None:
            stop.check()
        if len(pending) != said:  # once per change, not once per poll
            said = len(pending)
            logger.info(f"waiting for {said} unit run{'s' if said > 1 else ''} held by other processes")
        stale.check()
        time.sleep(poll_seconds)
