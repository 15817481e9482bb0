"""The run: create or resume a study (enqueuing the named schemes once), then run trials until the
study holds the requested number, alone (:func:`tune`) or as one of several workers (:func:`join_study`)."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

from ..artifacts import check_members_folder, check_split, mark_members_folder, members_dir, save_split
from ..config import ModelConfig
from ..errors import NonFiniteLossError, StudyError
from ..logs import progress_enabled
from ..notes import PENDING_DECISION, trial_line
from ..paths import display_url, models_dir
from ..retries import StaleTrials, create_study, load_study
from ..schemes import group_schemes, warm_start_schemes
from ..space import DEFAULT_EVALUATION, SearchSpace, StudyConfig, stored_evaluation
from ..storage import (
    FINISHED,
    SETUP_ATTR,
    check_made_by_tune,
    check_same_data,
    finished_count,
    library_versions,
    load_existing_study,
    open_storage,
    readable_rows,
    wait_until_set_up,
)
from ..budget import Budget, minutes, search_may_go_on, time_left
from .objective import Objective, SurplusTrial, TrialTimeoutError
from .stopping import search_done, stop_line

logger = logging.getLogger(__name__)


def make_sampler(seed: int) -> optuna.samplers.TPESampler:
    """TPE with ``constant_liar``: trials running in other workers count as poor results while they run,
    so parallel workers do not sample the same region twice (Optuna's advice for parallel TPE). With one
    process nothing else runs while a trial is sampled, so a single ``tune`` samples as without it."""
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=10, constant_liar=True)


def create_or_resume(storage_url: str, study_name: str, prepared, study_config: StudyConfig,
                     base_config: ModelConfig | dict, *, seed: int = 0, heartbeat: int = 10,
                     members: Path | None = None) -> tuple[optuna.Study, bool]:
    """Create the study (storing provenance and enqueuing every scheme once) or resume it.

    The sampler is re-seeded with the number of trials already in the study, so a
    resumed run never replays the parameters of the first run. ``members`` (the confirmation's models
    folder) is marked as the study's when it is created, and checked when it is resumed.
    """
    storage = open_storage(storage_url, heartbeat=heartbeat)
    pruner = study_config.make_pruner()
    try:
        # Creation is atomic in the database: of two racing `tune` commands only one creates
        # the study, and only that one enqueues the schemes.
        study = create_study(study_name, storage, make_sampler(seed), pruner,
                             directions=["maximize"] * len(study_config.objectives))
        created = True
    except optuna.exceptions.DuplicatedStudyError:
        n_before = len(storage.get_all_trials(storage.get_study_id_from_name(study_name), deepcopy=False))
        with readable_rows(storage_url, study_name):
            study = load_study(study_name, storage, make_sampler(seed + n_before), pruner)
            wait_until_set_up(study)
        created = False
    if created:
        _store_provenance(study, storage_url, prepared, study_config, ModelConfig.of(base_config), seed)
        _enqueue_schemes(study, prepared, study_config)
        if members is not None:
            mark_members_folder(study, members)
        study.set_user_attr(SETUP_ATTR, True)
        logger.info(f"created study {study_name!r} in {display_url(storage_url)}")
    else:
        _check_resume(study, storage_url, prepared, study_config, ModelConfig.of(base_config))
        if members is not None:
            check_members_folder(study.user_attrs, study_name, members)
        logger.info(f"resuming study {study_name!r}: {len(study.trials)} trials so far")
    return study, created


def _store_provenance(study: optuna.Study, storage_url: str, prepared, study_config: StudyConfig,
                      base_config: ModelConfig,
                      seed: int) -> None:
    """A new study's user attrs: the decision first (pending), then the data, split, settings and versions."""
    # The dashboard lists study user attrs in the order they were first set: the decision comes first.
    study.set_user_attr("decision", PENDING_DECISION)
    study.set_metric_names([f"val_{o}" for o in study_config.objectives])
    study.set_user_attr("objectives", study_config.objectives)
    meta = prepared.meta()
    for key in ("source", "data_fingerprint", "class_counts", "split_by", "n_features", "features_version", "label_map"):
        study.set_user_attr(key, meta[key])
    study.set_user_attr("split", save_split(study, prepared.chunk_ids, members_dir(storage_url, study.study_name)))
    study.set_user_attr("model_config", base_config.as_dict())
    study.set_user_attr("search_space", study_config.space.to_dict())
    study.set_user_attr("pruner", study_config.pruner)
    study.set_user_attr("library_versions", library_versions())
    study.set_user_attr("seed", seed)
    study.set_user_attr("evaluation", study_config.evaluation)


def _enqueue_schemes(study: optuna.Study, prepared, study_config: StudyConfig) -> None:
    """Enqueue every named scheme once (schemes with the same weight ratios share one trial)."""
    space = study_config.space
    schemes = warm_start_schemes(prepared.class_counts["train"])
    if study_config.schemes is not None:
        study_config.check_schemes()
        schemes = {k: v for k, v in schemes.items() if k in study_config.schemes}
    groups = group_schemes(schemes, prepared.class_counts["train"])
    for names in groups:
        weights = schemes[names[0]]
        params = space.params_for(weights)
        attrs = {"scheme": names[0], "schemes": names, "weights_given": weights}
        if not space.contains(params):  # e.g. the guide's 100/20/0.01: run, but not as a point of the space
            params, attrs = {}, dict(attrs, outside_space=True)
        study.enqueue_trial(params, user_attrs=attrs)
    logger.info(f"enqueued {len(groups)} baseline schemes ({len(schemes)} named, the same weight ratios once)")


def _check_resume(study: optuna.Study, storage_url: str, prepared, study_config: StudyConfig,
                  base_config: ModelConfig) -> None:
    """A :class:`StudyError` unless this run asks for what the study was made with (data, space,
    objectives, evaluation, model config)."""
    check_made_by_tune(study)
    check_same_data(study, prepared)
    check_split(study, prepared.chunk_ids, members_dir(storage_url, study.study_name))
    attrs, name = study.user_attrs, study.study_name
    stored = {"search space": (attrs.get("search_space"), study_config.space.to_dict()),
              "objectives": (attrs.get("objectives", ["important_f1"]), study_config.objectives),
              "evaluation (--design/--folds/--repeats/--confirm-top/--units-by)":
                  (stored_evaluation(attrs.get("evaluation")), study_config.evaluation),
              "model config": (attrs.get("model_config"), base_config.as_dict())}
    for what, (made, asked) in stored.items():
        if made is not None and made != asked:
            raise StudyError(f"study {name!r} was created with {what} {made}; this run asks for {asked}. "
                             "Use a new --study name.")


def open_study(prepared, storage_url: str, study_name: str, study_config: StudyConfig, *, seed: int = 0,
               heartbeat: int = 10, members: Path | None = None) -> tuple[optuna.Study, SearchSpace, dict]:
    """Create or resume the study; returns it with the search space and model config its trials use."""
    base_config = ModelConfig.from_dict(study_config.model)
    study, _ = create_or_resume(storage_url, study_name, prepared, study_config, base_config, seed=seed,
                                heartbeat=heartbeat, members=members)
    return study, study_config.space, base_config


def tune(prepared, storage_url: str, study_name: str, n_trials: int, study_config: StudyConfig, *,
         seed: int = 0, trial_timeout: float | None = None, heartbeat: int = 10, stop=None) -> optuna.Study:
    """Create or resume the study, then run it to ``n_trials`` finished (complete or pruned) trials in total.

    ``stop``: the command's :class:`.signals.StopGuard`, so that Ctrl-C stops a trial between batches.
    """
    study, space, base_config = open_study(prepared, storage_url, study_name, study_config, seed=seed,
                                           heartbeat=heartbeat)
    run_trials(study, prepared, storage_url, n_trials, space, base_config, trial_timeout=trial_timeout, stop=stop)
    return study


def join_study(prepared, storage_url: str, study_name: str, n_trials: int, *, seed: int = 0,
               trial_timeout: float | None = None, heartbeat: int = 10, stop=None,
               members: Path | None = None) -> optuna.Study:
    """A worker: join a study that ``tune`` created, with the study's own space and model config
    (``members``, its confirmation models folder, checked to be the study's).

    Workers never enqueue anything; the study's creator did that once.
    """
    probe = load_existing_study(storage_url, study_name)
    wait_until_set_up(probe)  # a worker started with `tune` may find the study half made
    check_made_by_tune(probe)
    attrs = probe.user_attrs
    if members is not None:
        check_members_folder(attrs, study_name, members)
    check_same_data(probe, prepared, "this worker")
    space = SearchSpace.from_dict(attrs["search_space"])
    pruner_cfg = attrs.get("pruner") or StudyConfig().pruner
    # Distinct per worker, so that workers started together do not sample alike.
    sampler = make_sampler(seed + len(probe.trials) + os.getpid())
    study = load_study(study_name, open_storage(storage_url, heartbeat=heartbeat), sampler,
                       StudyConfig(pruner=pruner_cfg).make_pruner())
    run_trials(study, prepared, storage_url, n_trials, space, ModelConfig.from_dict(attrs["model_config"]),
               trial_timeout=trial_timeout, stop=stop)
    return study


class Progress:
    """The search's bar and log: every worker's trials that ended, each once, and the time the whole ``tune`` is
    expected to take still (estimated again only when a trial has finished, not on every poll)."""

    ENDED = FINISHED + (TrialState.FAIL,)

    def __init__(self, study: optuna.Study, n_trials: int, evaluation: dict, done: int) -> None:
        from tqdm import tqdm

        self.study, self.n_trials, self.evaluation = study, n_trials, evaluation
        self.bar = tqdm(total=n_trials, initial=done, desc=f"study {study.study_name}", unit="trial", file=sys.stderr,
                        disable=not progress_enabled())
        self.shown = {t.number for t in study.get_trials(deepcopy=False, states=self.ENDED)}
        self.estimated: int | None = None  # the finished count the time left was estimated at

    def show_ended(self) -> None:
        """Log the trials that ended since the last call and move the bar."""
        bar = self.bar
        bar.n = min(finished_count(self.study), self.n_trials)
        if self.estimated != bar.n:
            self.estimated, left = bar.n, time_left(self.study, self.evaluation, bar.n)
            if left is not None:
                bar.set_postfix_str(f"whole tune: {minutes(left)} left", refresh=False)
        bar.refresh()
        for t in sorted(self.study.get_trials(deepcopy=False, states=self.ENDED), key=lambda t: t.number):
            if t.number not in self.shown:
                self.shown.add(t.number)
                logger.info(trial_line(t))


def next_step(study: optuna.Study, n_trials: int, evaluation: dict) -> str:
    """What a process's search does next: ``run`` one more trial; ``wait`` while other workers hold the last trials
    (one may still die and be retried) or finish theirs; ``stop``. The time budget and ``--trials auto`` each
    stop the search for every process once its running trials have ended."""
    finished = finished_count(study)
    auto_done = search_done(study) is not None  # asked first: it is stored at the cap too
    if finished >= n_trials:
        return "stop"
    running = len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
    budget_over = not search_may_go_on(study, evaluation)
    if (budget_over or auto_done) and not running:
        if budget_over:
            logger.info(f"time budget (--timeout {Budget.of(study).timeout}): the search stops at {finished} of "
                        f"{n_trials} trials, leaving the confirmation and the refits their time")
        else:
            logger.info(f"the search stops at {finished} trials{stop_line(study)}")
        return "stop"
    return "wait" if budget_over or auto_done or finished + running >= n_trials else "run"


def run_trials(study: optuna.Study, prepared, storage_url: str, n_trials: int, space: SearchSpace,
               base_config: ModelConfig, *, trial_timeout: float | None = None, poll_seconds: float = 1.0,
               max_failures: int = 5, stop=None) -> None:
    """Run trials one at a time until the study holds exactly ``n_trials`` finished trials (or the time budget or
    ``--trials auto`` ends the search: :func:`next_step`).

    Before each trial the finished and running trials of every worker are counted,
    so several workers together stop at the total; a trial that finds itself
    beyond the total (a race between workers) gives its parameters back. The bar and the log show
    every worker's finished trials, each once.
    """
    evaluation = stored_evaluation(study.user_attrs.get("evaluation"))
    objective = Objective(prepared, space, base_config, models_dir(storage_url, study.study_name),
                          trial_timeout=trial_timeout, n_trials=n_trials,
                          objectives=study.user_attrs.get("objectives", ["important_f1"]), evaluation=evaluation,
                          stop=stop)
    done = finished_count(study)
    if done >= n_trials:
        logger.info(f"study {study.study_name!r} already has {done} finished trials (--trials {n_trials}); nothing to run")
        return
    progress = Progress(study, n_trials, evaluation or DEFAULT_EVALUATION, done)
    failures = 0
    ran: list[optuna.trial.FrozenTrial] = []  # this process's trials, in order

    def after_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        ran.append(trial)
        if stop is not None:
            stop.abandon = None  # the trial is told: nothing is left RUNNING
        progress.show_ended()

    guard = stop.safe_points() if stop is not None else contextlib.nullcontext()
    stale = StaleTrials(study)
    try:
        with guard:
            while True:
                if stop is not None:
                    stop.check()
                step = next_step(study, n_trials, evaluation or DEFAULT_EVALUATION)
                if step == "stop":
                    break
                if step == "wait":
                    stale.check()
                    time.sleep(poll_seconds)
                    progress.show_ended()
                    continue
                study.optimize(objective, n_trials=1, gc_after_trial=True, callbacks=[after_trial],
                               catch=(NonFiniteLossError, TrialTimeoutError, SurplusTrial))
                last = ran[-1] if ran else None
                if last is not None and last.state == TrialState.FAIL and "surplus" not in last.user_attrs:
                    failures += 1
                    if failures >= max_failures:
                        raise StudyError(f"{failures} trials failed in a row; last reason: "
                                         f"{last.user_attrs.get('fail_reason', 'see the log')}")
                else:
                    failures = 0
        progress.show_ended()
    finally:
        progress.bar.close()
