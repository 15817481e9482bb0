"""The test split, once: the recommended configuration, no weights and the deployed ensemble scored after the decision."""

from __future__ import annotations

import logging
from pathlib import Path

import optuna

from ..artifacts import fetch_members, members_dir
from ..config import CLASSES
from ..errors import StudyError
from ..metrics import compute_stats
from ..notes import save_notes
from ..paths import model_path, models_dir
from ..posthoc import apply_multipliers, fit_adjustment
from ..records import Recommendation
from ..storage import store_recommendation, stored_recommendation, unweighted_config, unweighted_number
from .ensemble import ensemble_probs, stored_calibration
from .refits import recommended_config

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


def _scored_trials(study: optuna.Study, rec: Recommendation) -> list[tuple[int | None, dict]]:
    """The search's models the test check scores, as (trial number, config): the unweighted trial's first
    (``None`` where the study has no unweighted trial) and, for a weights decision, the recommended trial's."""
    out = [(unweighted_number(study), unweighted_config(study))]
    if rec.decision == "weights":
        out.append((rec.trial, recommended_config(study, rec)))
    return out


def search_models(study: optuna.Study, prepared, storage_url: str) -> None:
    """The step before the test check, and the only one of it that writes: train and save each search model
    it scores that is not on this machine (its trial ran in a worker elsewhere), on the search's training
    split; and complete a thresholds recommendation made before the units stored their multipliers (fitted
    on validation). A study without an unweighted trial is a :class:`StudyError`: the test check compares
    every decision with no weights' own search model."""
    from ..train import predict_probs, train_model
    from ..bundles import save_bundle

    rec = stored_recommendation(study)
    if rec is None:
        return
    models = models_dir(storage_url, study.study_name)
    trials = _scored_trials(study, rec)
    for number, config in trials:
        if number is None:
            raise StudyError(f"study {study.study_name!r} has no completed unweighted trial (its schemes left "
                             "'unweighted' out): the test split cannot score no weights; add it to the schemes")
        path = model_path(models, number)
        if not path.exists():  # a damaged one is refused by name when it is loaded, never silently replaced
            logger.info(f"model of trial {number} not on this machine; training it on the search's training split")
            save_bundle(train_model(prepared, config)[0], prepared.featurizer, config, path, prepared.label_map)
    if rec.decision == "thresholds" and rec.multipliers is None:
        from ..bundles import load_bundle

        model, _, cfg = load_bundle(model_path(models, trials[0][0]))  # the unweighted model
        fitted, _ = fit_adjustment(predict_probs(model, prepared.splits["val"], cfg), prepared.splits["val"].y)
        store_recommendation(study, rec.replace(multipliers=dict(zip(CLASSES, map(float, fitted)))))


def final_test_evaluation(study: optuna.Study, prepared, storage_url: str,
                          members_folder: str | Path | None = None) -> dict | None:
    """Score the recommended configuration and the unweighted model once on the test split.

    Runs after the decision and :func:`search_models`, and changes neither: it reads the models (a missing
    one is a :class:`StudyError`) and stores only its scores, as the ``test_stats`` user attr, shown in the
    study's note. The deployed ensemble (when models were kept) is scored too, read from ``members_folder``
    (default: the study's own members folder).
    """
    from ..predict import one_hot_probs
    from ..train import evaluate, predict_probs
    from ..bundles import load_bundle

    rec = stored_recommendation(study)
    if rec is None:
        logger.info("no recommendation: nothing to evaluate on the test split")
        return None
    models = models_dir(storage_url, study.study_name)
    test = prepared.splits["test"]
    trials = _scored_trials(study, rec)
    scored = {}
    for number, _ in trials:
        path = model_path(models, number) if number is not None else None
        if path is None or not path.exists():
            raise StudyError(f"study {study.study_name!r}: the model of trial {number} is not at {path}; the test "
                             "check reads the search's models (tune trains a missing one before it)")
        model, _, config = load_bundle(path)
        scored[number] = model, config
    u_number = trials[0][0]
    u_model, u_cfg = scored[u_number]
    result = {"decision": rec.decision, "unweighted": {"trial": u_number, "stats": evaluate(u_model, test, u_cfg)}}
    if rec.decision == "weights":
        model, cfg = scored[rec.trial]
        result["recommended"] = {"trial": rec.trial, "stats": evaluate(model, test, cfg)}
    elif rec.decision == "thresholds":
        if rec.multipliers is None:
            raise StudyError(f"study {study.study_name!r}: the thresholds decision has no multipliers; run tune again")
        probs = apply_multipliers(predict_probs(u_model, test, u_cfg), rec.multipliers)
        result["recommended"] = {"trial": u_number, "multipliers": rec.multipliers,
                                 "stats": compute_stats(test.y, one_hot_probs(probs.argmax(axis=1)))}
    else:
        result["recommended"] = result["unweighted"]
    members = rec.deployed.members if rec.deployed else ()
    if members:
        bundles = fetch_members(list(members), models / "members",
                                members_dir(storage_url, study.study_name, members_folder))
        probs = ensemble_probs(bundles, test, rec.multipliers, stored_calibration(rec.deployed))
        result["ensemble"] = {"members": len(bundles), "stats": compute_stats(test.y, probs)}
    check_rescore(study, study.user_attrs.get("test_stats"), result)
    study.set_user_attr("test_stats", result)
    save_notes(study, study.user_attrs.get("confirmation") or {"candidates": {}}, rec, result)
    logger.info(f"test split (scored once, after the decision): recommended "
                f"{result['recommended']['stats']['important_f1']:.4f}, unweighted "
                f"{result['unweighted']['stats']['important_f1']:.4f}")
    return result
