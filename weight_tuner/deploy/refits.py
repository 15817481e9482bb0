"""Refits: the recommended configuration trained again on every non-test line, the default of ``predict --study``."""

from __future__ import annotations

import fcntl
import logging
import time
from pathlib import Path

import numpy as np
import optuna

from ..config import ModelConfig
from ..errors import DataError, StudyError
from ..folds import refit_data
from ..metrics import compute_stats
from ..notes import publish
from ..paths import check_bundle, models_dir
from ..posthoc import apply_calibration, apply_multipliers
from ..records import Recommendation
from ..storage import stored_recommendation, trial_config, unweighted_config
from .ensemble import stored_calibration

logger = logging.getLogger(__name__)

DEFAULT_REFITS = 3

REFIT_SEED_STEP = 10  # refit k trains with seed + 10 k

REFIT_NAME = "refit.keras"  # the first refit, in the study's models folder; refit k > 0 is refit-<k>.keras


def refit_paths(models: Path, count: int) -> list[Path]:
    """Where a study's ``count`` refits are saved."""
    return [models / (REFIT_NAME if k == 0 else f"refit-{k}.keras") for k in range(count)]


def recommended_config(study: optuna.Study, recommendation: Recommendation) -> ModelConfig:
    """The model config of the recommendation: the weights trial's, else the unweighted one."""
    if recommendation.decision == "weights":
        trial = next(t for t in study.get_trials(deepcopy=False) if t.number == recommendation.trial)
        return trial_config(study, trial)
    return unweighted_config(study)


def refit(study: optuna.Study, prepared, storage_url: str, count: int = DEFAULT_REFITS,
          earlier: Recommendation | None = None) -> dict:
    """Train the recommended configuration ``count`` times on every non-test line (seeds ``seed``,
    ``seed + 10``, ...), save the models beside the study's, make them the default of ``predict --study``,
    and score their calibrated mean once on the test split (deciding nothing). Returns the
    ``deployed.refit`` entry.

    ``earlier`` is the study's recommendation before this run of ``tune``: refits it made of the same
    configuration, as many, all on disk and scored with the same calibration, are kept instead of
    trained again (a rerun of a finished study trains nothing)."""
    rec = stored_recommendation(study)
    if rec is None or rec.deployed is None:
        raise StudyError(f"study {study.study_name!r} has no recommendation to refit; run tune without --no-confirm")
    paths = refit_paths(models_dir(storage_url, study.study_name), count)
    paths[0].parent.mkdir(parents=True, exist_ok=True)
    # Processes of one study that reach the refits together: one trains, the others then find its models.
    with open(paths[0].parent / ".refit.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _refit(study, prepared, rec, paths, earlier)


def _refit(study: optuna.Study, prepared, rec: Recommendation, paths: list[Path],
           earlier: Recommendation | None) -> dict:
    from ..train import predict_probs, save_bundle, train_model

    count = len(paths)
    config = recommended_config(study, rec)
    calibration = stored_calibration(rec.deployed)
    for before in (stored_recommendation(study), earlier):
        made = before.deployed.refit if before and before.deployed else None
        if (made and made.get("models") == count and made.get("config") == config.as_dict()
                and before.deployed.calibration == rec.deployed.calibration  # the same models, scored alike
                and _intact(paths)):
            logger.info(f"the {count} refits of this configuration are already in {paths[0].parent}: kept")
            publish(study, rec.replace(deployed=rec.deployed.with_refit(made)))
            return made
    t0 = time.perf_counter()
    data = refit_data(prepared)
    test = prepared.splits["test"]
    probs = []
    for k, path in enumerate(paths):
        logger.info(f"refit {k + 1}/{count}: {rec.deployed.candidate} on {data.train.n} non-test lines")
        cfg = config.replace(seed=config.seed + REFIT_SEED_STEP * k)
        model, _ = train_model(data, cfg)
        save_bundle(model, prepared.featurizer, cfg, path, prepared.label_map)
        probs.append(apply_calibration(predict_probs(model, test, cfg), calibration))
    mean = apply_multipliers(np.mean(probs, axis=0), rec.multipliers)
    entry = {"models": count, "config": config.as_dict(), "train_lines": int(data.train.n),
             "train_class_counts": data.train.class_counts(),
             "trained_on": f"every non-test line (train and validation splits), {count} seeds",
             "test_important_f1": float(compute_stats(test.y, mean)["important_f1"])}
    publish(study, rec.replace(deployed=rec.deployed.with_refit(entry)))
    logger.info(f"{count} refit models saved in {paths[0].parent} ({time.perf_counter() - t0:.0f}s); test "
                f"important_f1 of their mean {entry['test_important_f1']:.4f} (scored once)")
    return entry


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
