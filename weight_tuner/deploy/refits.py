"""Refits: the recommended configuration trained again on every non-test line, the default of ``predict --study``."""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import socket
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

from ..config import ModelConfig
from ..errors import DataError, StudyError
from ..folds import refit_data
from ..metrics import compute_stats
from ..notes import publish
from ..paths import check_bundle, models_dir
from ..posthoc import apply_multipliers, calibrated_mean
from ..records import Recommendation
from ..retries import NothingLeft, StaleTrials, create_study, load_study, take_waiting
from ..storage import describe, storage_of, stored_recommendation, trial_config, unweighted_config
from .ensemble import stored_calibration

logger = logging.getLogger(__name__)

DEFAULT_REFITS = 3

REFIT_SEED_STEP = 10  # refit k trains with seed + 10 k

REFIT_NAME = "refit.keras"  # the first refit, in the study's models folder; refit k > 0 is refit-<k>.keras

REFIT_STUDY = ".refit-"  # the refits' companion study: <study>.refit-<id>
REFIT_PLAN_ATTR = "refit_plan"  # which run of tune planned the refits last, and their companion study


def refit_paths(models: Path, count: int) -> list[Path]:
    """Where a study's ``count`` refits are saved."""
    return [models / (REFIT_NAME if k == 0 else f"refit-{k}.keras") for k in range(count)]


def recommended_config(study: optuna.Study, recommendation: Recommendation) -> ModelConfig:
    """The model config of the recommendation: the weights trial's, else the unweighted one."""
    if recommendation.decision == "weights":
        trial = next(t for t in study.get_trials(deepcopy=False) if t.number == recommendation.trial)
        return trial_config(study, trial)
    return unweighted_config(study)


def refit_study(study_name: str, config: ModelConfig, paths: list[Path]) -> tuple[str, dict]:
    """The name of the refits' companion study, and where they are saved (``host``, absolute ``paths``).

    The name is hashed from the configuration and that place, this machine and folder: two ``tune`` of one
    study in two directories, or on two machines, each plan and train their own refits, never each other's
    (a relative path such as ``studies/s/models`` names a different folder in every working directory)."""
    where = {"host": socket.gethostname(), "paths": [str(Path(p).resolve()) for p in paths]}
    blob = json.dumps({"config": config.as_dict(), **where}, sort_keys=True)
    return f"{study_name}{REFIT_STUDY}{hashlib.sha256(blob.encode()).hexdigest()[:12]}", where


class Refits:
    """The refit step of one ``tune``: the recommended configuration trained ``count`` times on every non-test
    line (seeds ``seed``, ``seed + 10``, ...), saved beside the study's models, made the default of
    ``predict --study``, and their calibrated mean scored once on the test split (deciding nothing).

    As a context manager it holds the study's refit lock (several ``tune`` of one study: the first trains,
    the others find its refits) and plans the refits: those of the same configuration, count and
    calibration that ``earlier`` (the recommendation before this run) or the stored one made, all on disk
    and intact, are kept; otherwise every refit becomes a trial of the companion study
    ``<study>.refit-<id>``, which this process and ``tune``'s local workers take (:func:`take_refits`) while
    this process runs the test check. :meth:`finish` waits for them and scores their mean.
    """

    def __init__(self, study: optuna.Study, storage_url: str, count: int = DEFAULT_REFITS,
                 earlier: Recommendation | None = None, run_id: str | None = None):
        rec = stored_recommendation(study)
        if rec is None or rec.deployed is None:
            raise StudyError(f"study {study.study_name!r} has no recommendation to refit; run tune without --no-confirm")
        self.study, self.rec, self.earlier, self.run_id = study, rec, earlier, run_id
        self.paths = refit_paths(models_dir(storage_url, study.study_name), count)
        self.config = recommended_config(study, rec)
        self.kept: dict | None = None  # the refits kept instead of trained
        self.companion: optuna.Study | None = None
        self.since, self.carried = 0, set()  # the companion's trials that count for this run (see _plan)
        self._lock = None

    def __enter__(self) -> "Refits":
        self.paths[0].parent.mkdir(parents=True, exist_ok=True)
        self._lock = open(self.paths[0].parent / ".refit.lock", "w")
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        self.kept = self._kept()
        if self.kept is None:
            self.companion = self._plan()
        self.study.set_user_attr(REFIT_PLAN_ATTR, {"run": self.run_id,
                                                   "study": self.companion.study_name if self.companion else None})
        return self

    def __exit__(self, *exc) -> None:
        self._lock.close()  # releases the lock

    def _kept(self) -> dict | None:
        """Earlier refits of this configuration, count and calibration, all intact: kept and published."""
        rec, count = self.rec, len(self.paths)
        for before in (stored_recommendation(self.study), self.earlier):
            made = before.deployed.refit if before and before.deployed else None
            if (made and made.get("models") == count and made.get("config") == self.config.as_dict()
                    and before.deployed.calibration == rec.deployed.calibration  # the same models, scored alike
                    and _intact(self.paths)):
                logger.info(f"the {count} refits of this configuration are already in {self.paths[0].parent}: kept")
                publish(self.study, rec.replace(deployed=rec.deployed.with_refit(made)))
                return made
        return None

    def _plan(self) -> optuna.Study:
        """The companion study of these refits (:func:`refit_study`), with one waiting trial per refit not waiting
        or running already."""
        name, where = refit_study(self.study.study_name, self.config, self.paths)
        storage = storage_of(self.study)
        try:
            companion = create_study(name, storage, direction="minimize")
        except optuna.exceptions.DuplicatedStudyError:
            companion = load_study(name, storage)
        study_name = self.study.study_name
        describe(companion, "final_training_loss", {  # absolute paths: a local worker may start elsewhere
            "about": f"The refits of study {study_name!r}: one trial per deployed model, trained on every non-test "
                     "line; its values are final training losses, not scores, and every refit is deployed: no trial "
                     f"is the best here, whatever the direction and the best line say. The decision is in study "
                     f"{study_name!r}.",
            "config": self.config.as_dict(), **where})
        trials = companion.get_trials(deepcopy=False)
        # This run's refits: the trials queued from here on (and their retries), those an earlier run left
        # waiting or running, which are taken or retried instead of queued twice, and those it finished whose
        # files are still its models (a run killed during its refits): kept, not trained again.
        self.since = len(trials)
        self.carried = {t.number for t in trials if t.state in (TrialState.WAITING, TrialState.RUNNING)
                        or (t.state == TrialState.COMPLETE and self._saved(t.user_attrs.get("refit")))}
        queued = {t.user_attrs.get("refit") for t in trials if t.number in self.carried}
        for k in range(len(self.paths)):
            if k not in queued:
                companion.enqueue_trial({}, user_attrs={"refit": k})
        return companion

    def _saved(self, k: int | None) -> bool:
        """Whether refit ``k``'s file is intact and holds this configuration with that refit's seed (the path is
        shared by every configuration's refit ``k``)."""
        if k is None or not 0 <= k < len(self.paths) or not _intact([self.paths[k]]):
            return False
        from ..paths import bundle_paths, read_json

        saved = read_json(bundle_paths(self.paths[k]).config, "refit config")
        return saved == self.config.replace(seed=self.config.seed + REFIT_SEED_STEP * k).as_dict()

    def finish(self, prepared, stop=None, poll_seconds: float = 1.0) -> dict:
        """Train the refits left to take, wait for those other processes hold, then score their calibrated mean
        once on the test split and make them the default of ``predict --study``; return the ``deployed.refit``
        entry."""
        if self.kept is not None:
            return self.kept
        from ..bundles import load_bundle

        # Read again: the test check may have completed the recommendation (an old thresholds decision's multipliers).
        t0, count, rec = time.perf_counter(), len(self.paths), stored_recommendation(self.study)
        data = refit_data(prepared)
        logger.info(f"{count} refits of {rec.deployed.candidate} on {data.train.n} non-test lines")
        stale = StaleTrials(self.companion)
        while True:
            take_refits(self.companion, prepared, stop=stop, data=data)
            if not self.companion.get_trials(deepcopy=False, states=(TrialState.WAITING, TrialState.RUNNING)):
                break
            stale.check()  # a killed worker's refit is queued again
            time.sleep(poll_seconds)
        made = {t.user_attrs.get("refit") for t in self.companion.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                if t.number >= self.since or t.number in self.carried}
        missing = [path for k, path in enumerate(self.paths) if k not in made or not _intact([path])]
        if missing:
            raise StudyError(f"study {self.study.study_name!r}: the refit {missing[0]} was not made (its trial in study "
                             f"{self.companion.study_name!r} failed for good; see its fail_reason)")
        test = prepared.splits["test"]
        calibration = stored_calibration(rec.deployed)
        loaded = ((model, cfg) for model, _, cfg in map(load_bundle, self.paths))
        mean = apply_multipliers(calibrated_mean(loaded, test, calibration), rec.multipliers)
        stats = compute_stats(test.y, mean)  # per class and the confusion matrix: every view shows these
        entry = {"models": count, "config": self.config.as_dict(), "train_lines": int(data.train.n),
                 "train_class_counts": data.train.class_counts(),
                 "trained_on": f"every non-test line (train and validation splits), {count} seeds",
                 "test_important_f1": float(stats["important_f1"]), "test_stats": stats}
        publish(self.study, rec.replace(deployed=rec.deployed.with_refit(entry)))
        logger.info(f"{count} refit models saved in {self.paths[0].parent} ({time.perf_counter() - t0:.0f}s); test "
                    f"important_f1 of their mean {entry['test_important_f1']:.4f} (scored once)")
        return entry


def no_refits(study: optuna.Study, run_id: str | None) -> None:
    """Tell ``tune``'s local workers (run ``run_id``) that this run trains no refits, so that they leave."""
    if run_id is not None:
        study.set_user_attr(REFIT_PLAN_ATTR, {"run": run_id, "study": None})


def take_refits(companion: optuna.Study, prepared, stop=None, data=None) -> int:
    """Train the waiting refit trials of ``companion`` one at a time, each saved where the companion says;
    return how many this process trained. ``data`` is :func:`.folds.refit_data` of ``prepared`` where the
    caller has it already (built here at the first refit otherwise)."""
    from ..train import train_model
    from ..bundles import save_bundle

    config = ModelConfig.from_dict(companion.user_attrs["config"])
    paths = [Path(p) for p in companion.user_attrs["paths"]]

    def objective(trial: optuna.Trial) -> float:
        nonlocal data
        k = trial.user_attrs.get("refit")
        if k is None:
            trial.set_user_attr("fail_reason", "no refit was left to take (another process took the last)")
            raise NothingLeft()
        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("pid", os.getpid())
        if data is None:
            data = refit_data(prepared)
        cfg = config.replace(seed=config.seed + REFIT_SEED_STEP * k)
        logger.info(f"refit {k + 1}/{len(paths)}: training on {data.train.n} non-test lines")
        t0 = time.perf_counter()
        model, history = train_model(data, cfg, should_stop=stop.check if stop is not None else None,
                                     cache=prepared.models)
        save_bundle(model, prepared.featurizer, cfg, paths[k], prepared.label_map)
        trial.set_user_attr("seconds", time.perf_counter() - t0)
        return history[-1]["loss"]

    return sum(t is not None and t.state == TrialState.COMPLETE for t in take_waiting(companion, objective, stop))


def take_planned_refits(study: optuna.Study, prepared, run_id: str, stop=None, poll_seconds: float = 1.0) -> int:
    """A local worker of ``tune``: wait until that run (``run_id``) has planned its refits, then take them
    beside it; return how many this process trained (none when the run kept earlier refits)."""
    while (study.user_attrs.get(REFIT_PLAN_ATTR) or {}).get("run") != run_id:
        if stop is not None:
            stop.check()
        time.sleep(poll_seconds)
    name = study.user_attrs[REFIT_PLAN_ATTR]["study"]
    if name is None:
        return 0
    return take_refits(load_study(name, storage_of(study)), prepared, stop=stop)


def _intact(paths: list[Path]) -> bool:
    """Whether every refit bundle is on disk and matches its manifest (a damaged one is named and retrained)."""
    for path in paths:
        try:
            check_bundle(path)
        except DataError as exc:
            if path.exists():
                logger.warning(f"{exc}; the refits are trained again")
            return False
    return True
