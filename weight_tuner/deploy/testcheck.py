"""The test split, once: the recommended configuration, no weights and the deployed ensemble scored after the decision."""

from __future__ import annotations

import logging
from pathlib import Path

import optuna

from ..artifacts import fetch_members
from ..config import CLASSES, validate_config
from ..errors import StudyError
from ..metrics import compute_stats
from ..notes import save_notes
from ..paths import model_path, models_dir
from ..posthoc import apply_multipliers, fit_adjustment
from ..storage import store_recommendation, stored_recommendation, trial_config, unweighted_number
from .ensemble import ensemble_probs, stored_calibration

logger = logging.getLogger(__name__)

RESCORE_TOLERANCE = 1e-6


def check_rescore(study: optuna.Study, stored: dict | None, now: dict) -> None:
    """A :class:`StudyError` when a model scored again on the test split (the same trial, multipliers or
    ensemble as stored) gets another score: its model, cache or data changed since, and the stored test scores
    are kept rather than overwritten."""
    for key in ("unweighted", "recommended", "ensemble"):
        old, new = (stored or {}).get(key), now.get(key)
        if not old or not new or {k: v for k, v in old.items() if k != "stats"} != {k: v for k, v in new.items() if k != "stats"}:
            continue  # not scored before, or another model (a new decision): nothing to compare
        a, b = old["stats"]["important_f1"], new["stats"]["important_f1"]
        if abs(a - b) > RESCORE_TOLERANCE:
            raise StudyError(f"study {study.study_name!r}: the {key} model scores {b:.4f} on the test split now, "
                             f"{a:.4f} when first scored; a model, the feature cache or the data changed since. "
                             "The stored scores are kept; nothing was overwritten")


def final_test_evaluation(study: optuna.Study, prepared, storage_url: str,
                          members_folder: str | Path | None = None) -> dict | None:
    """Score the recommended configuration and the unweighted model once on the test split.

    Runs after the decision and changes nothing in it; stored as the ``test_stats`` user attr
    and shown in the study's note. The deployed ensemble (when models were kept) is scored too.
    """
    from ..predict import one_hot_probs
    from ..train import evaluate, load_bundle, predict_probs, save_bundle, train_model

    rec = stored_recommendation(study)
    if rec is None:
        logger.info("no recommendation: nothing to evaluate on the test split")
        return None
    models = models_dir(storage_url, study.study_name)
    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}

    def model_of(number: int | None, config: dict):
        path = model_path(models, number) if number is not None else None
        if path is not None and path.exists():
            model, _, cfg = load_bundle(path)
            return model, cfg
        logger.info(f"model of trial {number} not on disk; training it on the search's training split for the test")
        model = train_model(prepared, config)[0]
        if path is not None:  # predict --study uses it
            save_bundle(model, prepared.featurizer, config, path, prepared.label_map)
        return model, config

    base = validate_config(dict(study.user_attrs["model_config"], class_weights=None))
    u_number = unweighted_number(study)
    u_model, u_cfg = model_of(u_number, base)
    result = {"decision": rec["decision"],
              "unweighted": {"trial": u_number, "stats": evaluate(u_model, prepared.splits["test"], u_cfg)}}
    if rec["decision"] == "weights":
        trial = by_number[rec["trial"]]
        model, cfg = model_of(trial.number, trial_config(study, trial))
        result["recommended"] = {"trial": trial.number, "stats": evaluate(model, prepared.splits["test"], cfg)}
    elif rec["decision"] == "thresholds":
        val, test = prepared.splits["val"], prepared.splits["test"]
        multipliers = rec.get("multipliers")
        if multipliers is None:  # a decision made before the units stored their multipliers: fit on validation
            fitted, _ = fit_adjustment(predict_probs(u_model, val, u_cfg), val.y)
            multipliers = dict(zip(CLASSES, map(float, fitted)))
            rec = dict(rec, multipliers=multipliers)
            store_recommendation(study, rec)
        probs = apply_multipliers(predict_probs(u_model, test, u_cfg), multipliers)
        result["recommended"] = {"trial": u_number, "multipliers": multipliers,
                                 "stats": compute_stats(test.y, one_hot_probs(probs.argmax(axis=1)))}
    else:
        result["recommended"] = result["unweighted"]
    members = ((rec.get("deployed") or {}).get("ensemble") or {}).get("members")
    if members:
        bundles = fetch_members(members, models / "members", members_folder)
        probs = ensemble_probs(bundles, prepared.splits["test"], rec.get("multipliers"),
                               stored_calibration(rec["deployed"]))
        result["ensemble"] = {"members": len(bundles), "stats": compute_stats(prepared.splits["test"].y, probs)}
    check_rescore(study, study.user_attrs.get("test_stats"), result)
    study.set_user_attr("test_stats", result)
    save_notes(study, study.user_attrs.get("confirmation") or {"candidates": {}}, rec, result)
    logger.info(f"test split (scored once, after the decision): recommended {result['recommended']['stats']['important_f1']:.4f}, "
        f"unweighted {result['unweighted']['stats']['important_f1']:.4f}")
    return result
