"""Retries: trials a process takes from a queue, and trials a process lost (failed and queued once more).

Optuna's heartbeat fails the trial of a process that stopped beating; :class:`StaleTrials` also fails the trial
of a process that died before its first beat, which Optuna's own check never sees.

A retried trial takes the place in the queue of the trial it retries (:class:`QueueStudy`): Optuna hands out
waiting trials in the order they were queued, so a retry queued behind the rest would run last, and a study
that reaches its number of trials first would never run it. An interrupted and resumed study then runs the
trials the uninterrupted one would have.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import time

import optuna
import sqlalchemy
from optuna.trial import TrialState

from .paths import STORAGE_ENV
from .storage import storage_of

# What a re-queued trial keeps, so that a retried scheme is still that scheme (and a unit run that run).
RETRY_ATTRS = ("scheme", "schemes", "weights_given", "outside_space", "candidate", "unit")
QUEUE_ATTR = "queue_position"  # a retry's place in the queue: the number of the first trial it retries


def queue_position(trial) -> int:
    """Where a waiting trial stands in the queue: its own number, or for a retry (ours, or Optuna's heartbeat
    retry, which keeps the first failed trial's number in ``failed_trial``) the number of the trial it retries."""
    return int(trial.user_attrs.get(QUEUE_ATTR, trial.system_attrs.get("failed_trial", trial.number)))


def retry_attrs(trial) -> dict:
    """The user attrs that mark a trial queued again in place of ``trial``."""
    return {"retry_of": trial.number, QUEUE_ATTR: queue_position(trial)}


class QueueStudy(optuna.Study):
    """An Optuna study that hands out its waiting trials by :func:`queue_position`: a retry before every trial
    queued after the one it retries. Optuna takes them in the order of their numbers (``Study.ask``)."""

    def _pop_waiting_trial_id(self) -> int | None:
        waiting = self._storage.get_all_trials(self._study_id, deepcopy=False, states=(TrialState.WAITING,))
        for trial in sorted(waiting, key=lambda t: (queue_position(t), t.number)):
            try:  # as Optuna's own: another process may take it (False) or finish it (raises) first
                if self._storage.set_trial_state_values(trial._trial_id, state=TrialState.RUNNING):
                    return trial._trial_id
            except optuna.exceptions.UpdateFinishedTrialError:
                continue
        return None


def load_study(name: str, storage, sampler=None, pruner=None) -> QueueStudy:
    """``optuna.load_study`` for a study whose waiting trials are taken in queue order (:class:`QueueStudy`)."""
    return QueueStudy(study_name=name, storage=storage, sampler=sampler, pruner=pruner)


def create_study(name: str, storage, sampler=None, pruner=None, **kwargs) -> QueueStudy:
    """``optuna.create_study`` (raising ``DuplicatedStudyError`` as it does), as a :class:`QueueStudy`."""
    study = optuna.create_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner, **kwargs)
    return load_study(name, storage_of(study), sampler, pruner)


class NothingLeft(Exception):
    """Optuna handed out a fresh trial: another process took the last waiting one first."""


def take_waiting(study: optuna.Study, objective, stop=None, catch: tuple = (), may_start=None):
    """Run ``study``'s waiting trials one at a time, as Optuna hands them out, until none is left (the work of a
    companion study: unit runs, refits) or ``may_start()`` says no more may start (a spent time budget); yield
    each finished trial, or ``None`` when another process took the last one first. ``objective`` raises
    :class:`NothingLeft` on a trial that carries no work."""
    while study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        if stop is not None:
            stop.check()
        if may_start is not None and not may_start():
            return
        done: list[optuna.trial.FrozenTrial] = []
        study.optimize(objective, n_trials=1, gc_after_trial=True, catch=(NothingLeft, *catch),
                       callbacks=[lambda s, t: done.append(t)])
        yield done[-1] if done else None


def requeue(study: optuna.Study, trial) -> None:
    """Enqueue ``trial``'s parameters again (a live or a frozen trial), marked ``retry_of`` its number.

    An enqueued trial stopped before it suggested its parameters gives back the ones it was queued with
    (Optuna's ``fixed_params``); a sampled trial stopped then has nothing to give back.
    """
    frozen = storage_of(study).get_trial(trial._trial_id)
    params = frozen.params or frozen.system_attrs.get("fixed_params") or {}
    if params or frozen.user_attrs.get("outside_space") or "unit" in frozen.user_attrs:
        attrs = {k: v for k, v in frozen.user_attrs.items() if k in RETRY_ATTRS}
        study.enqueue_trial(params, user_attrs={**attrs, **retry_attrs(frozen)})


def fail_abandoned_trial(url: str, study_name: str, trial_id: int, lock_timeout: float = 60.0) -> None:
    """Mark a trial left RUNNING by an exiting process FAIL, and queue its parameters once."""
    engine_kwargs = {"connect_args": {"timeout": lock_timeout}} if url.startswith("sqlite") else None
    storage = optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, skip_compatibility_check=True)
    trial = storage.get_trial(trial_id)
    if trial.state != TrialState.RUNNING:
        return
    study = load_study(study_name, storage)
    queued = any(t.user_attrs.get("retry_of") == trial.number for t in study.get_trials(
        deepcopy=False, states=(TrialState.WAITING,)))
    if not queued:
        requeue(study, trial)
    storage.set_trial_user_attr(trial_id, "fail_reason", "interrupted twice: the process exited at once")
    storage.set_trial_state_values(trial_id, TrialState.FAIL)


def abandon_trial(trial: optuna.Trial) -> None:
    """A second Ctrl-C: fail the running trial (and re-queue it) before the process exits.

    The signal may have interrupted the study's own storage calls, even inside a write, so a
    fresh connection tries for a second; if the database is locked (by this very process), a
    detached helper does it as soon as this process is gone and its lock released.
    """
    url = getattr(storage_of(trial.study), "_backend", storage_of(trial.study)).url
    try:
        fail_abandoned_trial(url, trial.study.study_name, trial._trial_id, lock_timeout=1.0)
    except Exception:
        # The URL goes through the environment: it may hold a password, and a command line is public.
        subprocess.Popen([sys.executable, "-m", "weight_tuner.signals", trial.study.study_name,
                          str(trial._trial_id), str(os.getpid())], start_new_session=True,
                         env=dict(os.environ, **{STORAGE_ENV: url}),
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


class StaleTrials:
    """Fails a study's trials whose process died, and queues each once more (the storage's heartbeat callback).

    Optuna fails a RUNNING trial whose last heartbeat is older than the grace period, by the database's clock,
    but skips one that has no heartbeat yet. A process killed between taking a trial and its first beat leaves
    such a trial, and every process waiting for it would wait forever; it counts as stale once *this* check has
    seen it without a heartbeat for two grace periods of its own monotonic clock. (A trial's start time is the
    local time of the host that started it: against this host's clock, a live trial of a host whose clock runs
    behind would be failed, and a dead one of a host whose clock runs ahead never.)
    One instance per wait: it remembers when it first saw each trial without a heartbeat.
    """

    def __init__(self, study: optuna.Study, clock=time.monotonic):
        self.study, self.clock = study, clock
        self.first_seen: dict[int, float] = {}

    def check(self) -> None:
        """Fail (and queue once more) every trial of the study that is stale now."""
        study, storage = self.study, storage_of(self.study)
        interval = getattr(storage, "get_heartbeat_interval", lambda: None)()
        if not interval:
            return
        optuna.storages.fail_stale_trials(study)
        backend = getattr(storage, "_backend", storage)  # Optuna wraps an RDB storage in a cache
        grace = 2 * (backend.grace_period or 2 * interval)
        running = [t._trial_id for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))]
        beating = set()
        if running:
            beats = sqlalchemy.text("SELECT trial_id FROM trial_heartbeats WHERE trial_id IN :ids").bindparams(
                sqlalchemy.bindparam("ids", expanding=True))
            with backend.engine.connect() as connection:
                beating = {row[0] for row in connection.execute(beats, {"ids": running})}
        now = self.clock()
        self.first_seen = {i: self.first_seen.get(i, now) for i in running if i not in beating}
        callback = storage.get_heartbeat_stale_trial_callback()
        for trial_id, seen in self.first_seen.items():
            if now - seen < grace:
                continue
            try:
                if not storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
                    continue
            except optuna.exceptions.UpdateFinishedTrialError:  # another process failed it first
                continue
            if callback is not None:
                callback(study, copy.deepcopy(storage.get_trial(trial_id)))
