"""Recommendation stage: confirm the search's top candidates against no weights, paired, and decide.

After the search, the best few distinct weight vectors, the unweighted model and the post-hoc
threshold competitor (on the unweighted model) are scored on the same (repeat, fold) units
(:mod:`.units`). For each candidate the paired difference to the unweighted model gets a
confidence interval; weights are recommended only when the interval's lower bound is above 0.
Per-unit results are saved in the study after every unit, so an interrupted confirmation
resumes without redoing finished units. The test split decides nothing: it is scored once,
after the decision, for the recommended configuration and for no weights.
"""

from __future__ import annotations

import logging
import math
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import optuna

from ..config import CLASSES, validate_config
from ..errors import StudyError
from ..paths import model_path, models_dir
from .members import (DEFAULT_DEPLOYED, deployed_calibration, ensemble_of, ensemble_probs, fetch_members,
                      stored_calibration)
from .notes import PENDING_DECISION, decision_attr, save_notes
from .statistics import decide, mean_or_nan
from .storage import FINISHED, store_recommendation, stored_recommendation, trial_config
from .unitruns import (UNWEIGHTED, missing_runs, open_companion, plan_ratio, race_of, results, runs_of, state_of,
                       take_runs, unweighted_number as _unweighted_number, wait_for_runs)
from .units import Unit

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- confirmation

def confirm(study: optuna.Study, prepared, evaluation: dict, after_unit=None, stop=None,
            wait: bool = True, members: Path | None = None, racing: bool = True) -> dict | None:
    """Take the confirmation's unit runs (through the storage, with every other process of the study),
    then decide.

    ``evaluation`` holds ``folds``, ``repeats``, ``top`` and ``first_repeat``. The runs are trials of a
    companion study (:mod:`.unitruns`), planned once from the finished search; finished runs are never
    redone. After each run this process finishes, the study's ``confirmation`` user attr is updated
    and ``after_unit(name, unit)`` called; ``stop`` (a :class:`.signals.StopGuard`) stops between
    training batches. With ``wait`` (``tune``) this returns the recommendation once every run is done,
    also stored as the ``recommendation`` user attr; without (a ``worker``), it returns ``None`` when no
    run is left to take. With ``members`` (a folder) every run's model is kept there, and the
    recommendation names the recommended candidate's models as the deployed ensemble. With ``racing``
    (for a new plan; a plan keeps its own setting), a candidate's runs stop once it cannot win
    (:mod:`.racing`): the decision is the one every run would give.
    """
    companion, plan = open_companion(study, evaluation, racing)
    ratio = plan_ratio(prepared, plan)
    total = len(runs_of(plan))
    pending, _ = missing_runs(companion, plan, race_of(companion, plan, ratio))
    logger.info(f"confirming {len(plan['candidates']) - 2} weight candidates, the unweighted model and thresholds on "
                f"{len(plan['units'])} units ({plan['folds']} folds x {plan['repeats']} repeats"
                f"{', racing' if plan.get('racing') else ''}): "
                f"{total - len(pending)}/{total} unit runs done or not needed (study {companion.study_name!r})")

    def after_run(trial) -> None:
        counted = race_of(companion, plan, ratio)
        study.set_user_attr("confirmation", state_of(plan, results(companion, counted), counted))
        if after_unit is not None:
            after_unit(trial.user_attrs["candidate"], Unit.from_key(trial.user_attrs["unit"]))

    with stop.safe_points() if stop is not None else nullcontext():
        if not wait:
            take_runs(companion, plan, prepared, stop, after_run, members)
            return None
        counted = wait_for_runs(companion, plan, prepared, stop, after_run, members=members)
    finished = results(companion, counted)
    state = state_of(plan, finished, counted)
    study.set_user_attr("confirmation", state)
    recommendation = recommendation_from(state, evaluation)
    recommendation["finished_trials"] = len(study.get_trials(deepcopy=False, states=FINISHED))
    recommendation["confirmation_study"] = companion.study_name
    recommendation["deployed"] = kept_refits(deployed_models(study, companion, finished, recommendation),
                                             stored_recommendation(study))
    store_recommendation(study, recommendation)
    study.set_user_attr("decision", decision_attr(recommendation))
    save_notes(study, state, recommendation)
    return recommendation


def withdraw_stale_recommendation(study: optuna.Study) -> bool:
    """Withdraw a recommendation made before trials that have finished since (it no longer covers the
    search); return whether one was withdrawn. ``tune --no-confirm`` calls this after adding trials."""
    rec = stored_recommendation(study)
    if not rec or rec.get("finished_trials") == len(study.get_trials(deepcopy=False, states=FINISHED)):
        return False
    store_recommendation(study, None)
    study.set_user_attr("decision", PENDING_DECISION)
    return True


def confirmation_evaluation(study: optuna.Study, default: dict) -> dict:
    """The evaluation settings the confirmation uses: the study's own (``default`` for a study without).

    The cv design scored its trials on the first repeats, so its confirmation takes fresh partitions
    and seeds (``first_repeat`` = ``repeats``), not the units that chose the winner.
    """
    evaluation = dict(study.user_attrs.get("evaluation") or default)
    if evaluation["design"] == "cv":
        evaluation["first_repeat"] = evaluation["repeats"]
    return evaluation


def recommendation_from(state: dict, evaluation: dict) -> dict:
    """The decision over the units of a confirmation state, with everything export needs."""
    cands = state["candidates"]
    # Every candidate's units are a prefix of the unweighted one's (all of them, without racing).
    lines = [(u["lines"], u["train_lines"]) for u in cands[UNWEIGHTED]["units"].values()]
    ratio = float(np.mean([a for a, _ in lines]) / np.mean([b for _, b in lines])) if lines else 1.0
    scores = {n: {"kind": c["kind"], "scores": {k: u["scores"]["important_f1"] for k, u in c["units"].items()}}
              for n, c in cands.items()}
    result = decide(scores, ratio)
    for row in result["candidates"]:
        c = cands[row["candidate"]]
        row.update(trial=c.get("trial"), class_weights=c.get("class_weights"), scheme=c.get("scheme"),
                   stopped_after=c.get("stopped_after"),
                   per_class={k: mean_or_nan(u["scores"][k] for u in c["units"].values())
                              for k in ("Nomenclature_f1", "Description_f1")})
    pick = cands[result["candidate"]]
    if result["decision"] == "thresholds":
        result["multipliers"] = unit_multipliers(pick["units"])
    result.update(class_weights=pick["class_weights"] if result["decision"] == "weights" else None,
                  trial=pick.get("trial") if result["decision"] == "weights" else cands[UNWEIGHTED].get("trial"),
                  n_units=result["diff_vs_unweighted"]["n_units"], folds=state["folds"], repeats=state["repeats"],
                  design=evaluation.get("design", "confirm"), test_train_ratio=ratio)
    return result


def deployed_models(study: optuna.Study, companion: optuna.Study, finished: dict, recommendation: dict) -> dict:
    """What ``predict --study`` can use for the recommended configuration: the confirmation's models of
    its candidate (the ensemble), the search's model of its trial (single) and, once made, a refit."""
    candidate = recommendation["candidate"] if recommendation["decision"] == "weights" else UNWEIGHTED
    counts = study.user_attrs.get("class_counts", {})
    members = ensemble_of(companion, finished, candidate)
    return {"default": DEFAULT_DEPLOYED if members else "single", "candidate": candidate,
            "calibration": deployed_calibration(members, recommendation["decision"]),
            "ensemble": {"members": members,
                         "trained_on": "each member: the unit's training folds of the non-test chunks"},
            "single": {"trial": recommendation["trial"], "train_class_counts": counts.get("train"),
                       "trained_on": "the search's training split"}}


def kept_refits(deployed: dict, earlier: dict | None) -> dict:
    """``deployed`` with the earlier recommendation's refits, where they are of the same candidate with the
    same calibration: a rerun that stops before its refit step (an error, Ctrl-C) leaves ``predict --study``
    on the refits it used, and the refit step then checks and keeps them."""
    before = (earlier or {}).get("deployed") or {}
    same = all(before.get(k) == deployed.get(k) for k in ("candidate", "calibration"))
    return dict(deployed, refit=before["refit"], default="refit") if same and before.get("refit") else deployed


def unit_multipliers(units: dict) -> dict[str, float] | None:
    """The thresholds decision's multipliers: the geometric mean of those fitted on each unit's held-out
    fold (validation data of the models the decision rests on), scaled so that Misc's is 1; ``None`` for
    unit runs made before multipliers were stored."""
    fitted = [u["multipliers"] for u in units.values() if u.get("multipliers")]
    if not fitted or len(fitted) < len(units):
        return None
    logs = {c: float(np.mean([math.log(m[c]) for m in fitted])) for c in CLASSES}
    return {c: float(f"{math.exp(logs[c] - logs['Misc']):.6g}") for c in CLASSES}


# --------------------------------------------------------------------------- the test split, once

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
    from ..metrics import compute_stats
    from ..posthoc import apply_multipliers, fit_adjustment
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
    u_number = _unweighted_number(study)
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
