"""Export stage: the best weights of a study as JSON that pastes into a SKOL model_config."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from optuna.trial import TrialState

from .errors import StudyError
from .paths import write_json
from .records import Deployed, Difference, Recommendation
from .space import METRIC_NAME
from .storage import (completed_trials, stored_recommendation, trial_config, trial_score, tuned_study,
                      unweighted_config)

WEIGHT_SCALES = {
    "class_weights": "as trained: scaled so that the mean weight over the training lines is 1 (only the ratios "
                     "matter); the values to paste",
    "weights_given": "as the scheme or the sampler gave them, before scaling (the guide's numbers)",
}


def _diff(d: Difference) -> dict:
    return {"mean": d.mean, "ci_low": d.ci_low, "ci_high": d.ci_high}


def closest_challenger(rec: Recommendation) -> dict | None:
    """The candidate other than no weights with the largest mean paired difference, with its interval."""
    if not rec.challengers:
        return None
    best = max(rec.challengers, key=lambda r: r.diff.mean)
    return {"candidate": best.candidate, "kind": best.kind, "class_weights": best.class_weights,
            "diff_vs_unweighted": _diff(best.diff)}


def recommendation_export(rec: Recommendation) -> dict:
    """The ``recommendation`` object of an export: the decision, its sentence, its interval (against no
    weights; for a no-weights decision the closest challenger's), the candidates table and the deployed model."""
    from .notes import decision_sentence

    no_weights = rec.decision == "no_weights"
    return {"decision": rec.decision, "sentence": decision_sentence(rec), "class_weights": rec.class_weights,
            "multipliers": rec.multipliers,
            "metric": "important_f1 = mean(Nomenclature F1, Description F1)",
            "scores_over": f"the mean over {rec.n_units} confirmation units (each scored on its held-out fold)",
            "diff_vs_unweighted": None if no_weights else _diff(rec.diff_vs_unweighted),
            "closest_challenger": closest_challenger(rec) if no_weights else None,
            "level": rec.level, "interval": rec.interval, "n_units": rec.n_units, "folds": rec.folds,
            "repeats": rec.repeats, "units_by": rec.units_by, "design": rec.design, "trial": rec.trial,
            "detectable": rec.detectable,
            "candidates": [{"candidate": r.candidate, "kind": r.kind, "trial": r.trial,
                            "class_weights": r.class_weights, "important_f1": r.mean,
                            "diff_vs_unweighted": _diff(r.diff)}
                           for r in rec.candidates],
            "deployed_model": deployed_export(rec.deployed)}


def deployed_export(deployed: Deployed | None) -> dict | None:
    """What ``predict --study`` uses: the default kind, the ensemble's members (unit, artifact, training
    lines), the single model's trial, the refits (how many, training lines) and the calibration."""
    if not deployed:
        return None
    return {"default": deployed.default, "candidate": deployed.candidate,
            "ensemble": {"trained_on": deployed.ensemble_trained_on,
                         "members": [{k: m[k] for k in ("unit", "artifact_id", "train_lines")}
                                     for m in deployed.members]},
            "single": {k: deployed.single[k] for k in ("trial", "trained_on")},
            "refit": ({k: deployed.refit.get(k, 1 if k == "models" else None)
                       for k in ("models", "train_lines", "trained_on", "test_important_f1")}
                      if deployed.refit else None),
            "calibration": deployed.calibration}


def exported_trial(study, rec: Recommendation | None, trial_number: int | None):
    """The trial an export describes: ``trial_number`` (a :class:`StudyError` naming the completed ones if it is not
    one), else the recommended trial (``None`` where no weights were decided and no unweighted trial ran), else the
    best trial (no decision yet)."""
    complete = completed_trials(study)
    if trial_number is None and rec is not None:
        return next((t for t in study.trials if t.number == rec.trial), None)
    if trial_number is None:
        return max(complete, key=trial_score)
    chosen = [t for t in complete if t.number == trial_number]
    if not chosen:
        raise StudyError(f"study {study.study_name!r} has no completed trial number {trial_number}; completed: "
                         f"{', '.join(str(t.number) for t in complete)}")
    return chosen[0]


def scheme_baselines(study) -> dict:
    """Each named scheme's trial, state, weights (trained and given) and validation score."""
    baselines: dict = {}
    for t in study.trials:
        scheme = t.user_attrs.get("scheme")
        # A scheme retried after a fault has several trials: the completed one speaks for it.
        if scheme and scheme != "search" and baselines.get(scheme, {}).get("state") != "COMPLETE":
            baselines[scheme] = {"trial": t.number, "state": t.state.name,
                                 "class_weights": t.user_attrs.get("class_weights_trained"),
                                 "weights_given": t.user_attrs.get("class_weights"),
                                 METRIC_NAME: trial_score(t) if t.state == TrialState.COMPLETE else None}
    return baselines


def build_export(storage_url: str, study_name: str, trial_number: int | None = None) -> dict:
    """The export payload: the study's recommendation, or ``trial_number``'s weights when given.

    ``class_weights`` is what to paste into a SKOL ``model_config``: the recommended weights,
    or ``null`` (no class weights) when the confirmation found none that beat no weights. A study
    whose confirmation has not run yet exports its best trial, with ``recommendation`` null.
    In multi-objective mode that is the point of the Pareto front with the best validation
    important_f1 (the trial with the best mean of two F1s is always on that front). A decision for no
    weights in a study whose schemes left ``unweighted`` out has no trial behind it: ``trial_number`` is
    null and the model config is the study's, never another trial's.
    """
    study = tuned_study(storage_url, study_name)
    rec = stored_recommendation(study)
    best = exported_trial(study, rec, trial_number)
    attrs = study.user_attrs
    config = trial_config(study, best) if best else unweighted_config(study)
    val_stats = {k[len("val_"):]: v for k, v in best.user_attrs.items() if k.startswith("val_")} if best else {}
    baselines = scheme_baselines(study)
    test = attrs.get("test_stats")
    follows = trial_number is None and rec is not None
    if follows:
        config = config.replace(class_weights=rec.class_weights)
    else:  # the weights this trial trained with
        config = config.replace(class_weights=best.user_attrs.get("class_weights_trained", config.class_weights))
    from .notes import decision_sentence, deployed_test

    if follows:
        decision = decision_sentence(rec)
    elif rec is not None:
        decision = f"Trial {best.number}'s weights, exported by request; the study's decision: {decision_sentence(rec)}"
    else:
        decision = "No decision yet (the confirmation has not run): these are the best trial's weights."
    return {
        "decision": decision,  # first: what a reader of the file needs before anything else
        "class_weights": config.class_weights,
        "deployed_test": deployed_test(rec, test) if follows else None,
        "recommendation": recommendation_export(rec) if follows else None,
        "model_config": config.as_dict(),
        "study": study_name,
        "trial_number": best.number if best else None,
        "scheme": best.user_attrs.get("scheme") if best else None,
        "objectives": attrs.get("objectives", ["important_f1"]),
        "pareto_front": [t.number for t in study.best_trials] if len(study.directions) > 1 else None,
        "val_stats": val_stats,
        "weights_given": best.user_attrs.get("class_weights") if best else None,
        "weight_scales": WEIGHT_SCALES,
        "val_stats_over": (f"one validation split (trial {best.number}'s)" if best else
                           "none: the study has no unweighted trial (its schemes left it out); the decision rests "
                           "on the confirmation's units"),
        "test_stats": ({k: test[k]["stats"] for k in ("recommended", "unweighted", "ensemble") if k in test}
                       if test and follows else None),
        "data_fingerprint": attrs.get("data_fingerprint"),
        "source": attrs.get("source"),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "baselines": baselines,
    }


def export_study(storage_url: str, study_name: str, out: str | Path, trial_number: int | None = None) -> dict:
    """Write the export atomically: a reader never sees a partial file, and a failure leaves the old one."""
    payload = build_export(storage_url, study_name, trial_number)
    write_json(out, payload)
    return payload
