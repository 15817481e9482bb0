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
from .storage import FINISHED, completed_trials, trial_config, trial_score, tuned_study
from .unitruns import (THRESHOLDS, UNWEIGHTED, missing_runs, open_companion, results, runs_of, state_of, take_runs,
                       unweighted_number as _unweighted_number, wait_for_runs)
from .units import Unit

logger = logging.getLogger(__name__)

LEVEL = 0.95
INTERVAL_METHOD = ("corrected resampled t (Nadeau & Bengio 2003): the variance of the mean difference is "
                   "inflated by held-out/training lines, because units share training data; one interval per "
                   "candidate, no multiplicity correction")
CONFIRMATION_MARK = "### Confirmation"


# --------------------------------------------------------------------------- statistics

def paired_interval(diffs, test_train_ratio: float, level: float = LEVEL) -> dict:
    """Mean of paired differences over units with a corrected resampled t interval.

    ``test_train_ratio`` is held-out lines / training lines of a unit (about 1/(K-1) for K folds).
    With fewer than 2 units the interval is unbounded: nothing can be claimed.
    """
    from scipy.stats import t as student_t

    d = np.asarray(list(diffs), dtype=np.float64)
    n = len(d)
    mean = float(d.mean()) if n else 0.0
    if n < 2:
        return {"mean": mean, "ci_low": -math.inf, "ci_high": math.inf, "n_units": n}
    se = math.sqrt((1.0 / n + test_train_ratio) * float(d.var(ddof=1)))
    half = float(student_t.ppf(0.5 + level / 2.0, n - 1)) * se
    return {"mean": mean, "ci_low": mean - half, "ci_high": mean + half, "n_units": n}


def decide(candidates: dict[str, dict], test_train_ratio: float, level: float = LEVEL) -> dict:
    """The decision from per-unit scores: ``candidates[name] = {"kind", "scores": {unit: important_f1}}``.

    ``kind`` is ``"unweighted"``, ``"weights"`` or ``"thresholds"``. Each other candidate is compared
    with the unweighted one on the units both have. Weights (or thresholds) are recommended only
    when their interval's lower bound is above 0; among those, the largest mean difference wins.
    Otherwise the decision is ``"no_weights"``.
    """
    base = candidates[UNWEIGHTED]["scores"]
    others = [n for n in candidates if n != UNWEIGHTED]
    rows = [{"candidate": UNWEIGHTED, "kind": "unweighted", "mean": _mean(base.values()),
             "diff": {"mean": 0.0, "ci_low": 0.0, "ci_high": 0.0, "n_units": len(base)}}]
    for name in others:
        scores = candidates[name]["scores"]
        common = sorted(set(scores) & set(base))
        diff = paired_interval([scores[u] - base[u] for u in common], test_train_ratio, level)
        rows.append({"candidate": name, "kind": candidates[name]["kind"], "mean": _mean(scores[u] for u in common),
                     "diff": diff})
    clear = [r for r in rows[1:] if r["diff"]["ci_low"] > 0]
    pick = max(clear, key=lambda r: r["diff"]["mean"]) if clear else rows[0]
    decision = {"weights": "weights", "thresholds": "thresholds"}.get(pick["kind"], "no_weights")
    return {"decision": decision, "candidate": pick["candidate"], "diff_vs_unweighted": pick["diff"],
            "level": level, "interval": INTERVAL_METHOD, "candidates": rows}


def _mean(values) -> float:
    values = list(values)
    return float(np.mean(values)) if values else float("nan")


# --------------------------------------------------------------------------- confirmation

def confirm(study: optuna.Study, prepared, evaluation: dict, after_unit=None, stop=None,
            wait: bool = True) -> dict | None:
    """Take the confirmation's unit runs (through the storage, with every other process of the study),
    then decide.

    ``evaluation`` holds ``folds``, ``repeats``, ``top`` and ``first_repeat``. The runs are trials of a
    companion study (:mod:`.unitruns`), planned once from the finished search; finished runs are never
    redone. After each run this process finishes, the study's ``confirmation`` user attr is updated
    and ``after_unit(name, unit)`` called; ``stop`` (a :class:`.signals.StopGuard`) stops between
    training batches. With ``wait`` (``tune``) this returns the recommendation once every run is done,
    also stored as the ``recommendation`` user attr; without (a ``worker``), it returns ``None`` when no
    run is left to take.
    """
    companion, plan = open_companion(study, evaluation)
    total = len(runs_of(plan))
    pending, _ = missing_runs(companion, plan)
    logger.info(f"confirming {len(plan['candidates']) - 2} weight candidates, the unweighted model and thresholds on "
                f"{len(plan['units'])} units ({plan['folds']} folds x {plan['repeats']} repeats): "
                f"{total - len(pending)}/{total} unit runs done (study {companion.study_name!r})")

    def after_run(trial) -> None:
        study.set_user_attr("confirmation", state_of(plan, results(companion)))
        if after_unit is not None:
            after_unit(trial.user_attrs["candidate"], Unit.from_key(trial.user_attrs["unit"]))

    with stop.safe_points() if stop is not None else nullcontext():
        if not wait:
            take_runs(companion, plan, prepared, stop, after_run)
            return None
        wait_for_runs(companion, plan, prepared, stop, after_run)
    state = state_of(plan, results(companion))
    study.set_user_attr("confirmation", state)
    recommendation = recommendation_from(state, evaluation)
    recommendation["finished_trials"] = len(study.get_trials(deepcopy=False, states=FINISHED))
    recommendation["confirmation_study"] = companion.study_name
    study.set_user_attr("recommendation", recommendation)
    _save_notes(study, state, recommendation)
    return recommendation


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
    lines = [(u["lines"], u["train_lines"]) for c in cands.values() for u in c["units"].values()]
    ratio = float(np.mean([a for a, _ in lines]) / np.mean([b for _, b in lines])) if lines else 1.0
    scores = {n: {"kind": c["kind"], "scores": {k: u["scores"]["important_f1"] for k, u in c["units"].items()}}
              for n, c in cands.items()}
    result = decide(scores, ratio)
    for row in result["candidates"]:
        c = cands[row["candidate"]]
        row.update(trial=c.get("trial"), class_weights=c.get("class_weights"), scheme=c.get("scheme"),
                   per_class={k: _mean(u["scores"][k] for u in c["units"].values())
                              for k in ("Nomenclature_f1", "Description_f1")})
    pick = cands[result["candidate"]]
    result.update(class_weights=pick["class_weights"] if result["decision"] == "weights" else None,
                  trial=pick.get("trial") if result["decision"] == "weights" else cands[UNWEIGHTED].get("trial"),
                  n_units=result["diff_vs_unweighted"]["n_units"], folds=state["folds"], repeats=state["repeats"],
                  design=evaluation.get("design", "confirm"), test_train_ratio=ratio)
    return result


# --------------------------------------------------------------------------- views

def candidates_table(recommendation: dict) -> str:
    """The candidates with their mean important_f1 and paired difference to no weights, as text."""
    pct = int(round(recommendation["level"] * 100))
    rows = [f"{'candidate':<14}{'weights N / D / M':<26}{'important_f1':>13}{'diff vs none':>14}"
            f"{f'{pct}% interval':>22}"]
    for r in recommendation["candidates"]:
        w = r.get("class_weights")
        ws = " / ".join(f"{w[c]:.3g}" for c in CLASSES) if w else "-"
        d = r["diff"]
        interval = f"[{d['ci_low']:+.4f}, {d['ci_high']:+.4f}]"
        rows.append(f"{r['candidate']:<14}{ws:<26}{r['mean']:>13.4f}{d['mean']:>+14.4f}{interval:>22}")
    return "\n".join(rows)


def decision_sentence(recommendation: dict) -> str:
    """One sentence: what to use and why."""
    d = recommendation["diff_vs_unweighted"]
    n = recommendation["n_units"]
    if recommendation["decision"] == "weights":
        w = recommendation["class_weights"]
        return (f"Use class weights {', '.join(f'{c} {w[c]:.4g}' for c in CLASSES)} ({recommendation['candidate']}): "
                f"important_f1 {d['mean']:+.4f} against no weights over {n} paired units, interval "
                f"[{d['ci_low']:+.4f}, {d['ci_high']:+.4f}] clear of 0.")
    if recommendation["decision"] == "thresholds":
        return (f"Use no class weights, with post-hoc per-class thresholds: {d['mean']:+.4f} against plain "
                f"argmax over {n} paired units, interval [{d['ci_low']:+.4f}, {d['ci_high']:+.4f}] clear of 0.")
    best = max(recommendation["candidates"][1:], key=lambda r: r["diff"]["mean"], default=None)
    why = (f" The best candidate ({best['candidate']}) differs by {best['diff']['mean']:+.4f}, interval "
           f"[{best['diff']['ci_low']:+.4f}, {best['diff']['ci_high']:+.4f}], which includes 0." if best else "")
    return f"Use no class weights: no candidate beat the unweighted model with an interval clear of 0.{why}"


def paste_snippet(recommendation: dict) -> str:
    """What to put in a SKOL model_config."""
    import json

    return 'model_config["class_weights"] = ' + (json.dumps(recommendation["class_weights"])
                                                  if recommendation["class_weights"] else "None")


def study_note(recommendation: dict, test: dict | None = None) -> str:
    """The study-level dashboard note: decision, candidates table with intervals, test check, snippet."""
    pct = int(round(recommendation["level"] * 100))
    lines = ["## Recommendation", "", decision_sentence(recommendation), "",
             f"Paired over {recommendation['n_units']} units ({recommendation['folds']} folds x "
             f"{recommendation['repeats']} repeats). Interval: {pct}%, {recommendation['interval']}.", "",
             "| candidate | weights N / D / M | important_f1 | diff vs no weights | interval |",
             "|---|---|---|---|---|"]
    for r in recommendation["candidates"]:
        w = r.get("class_weights")
        ws = " / ".join(f"{w[c]:.3g}" for c in CLASSES) if w else "-"
        d = r["diff"]
        lines.append(f"| {r['candidate']} | {ws} | {r['mean']:.4f} | {d['mean']:+.4f} | "
                     f"[{d['ci_low']:+.4f}, {d['ci_high']:+.4f}] |")
    if test:
        lines += ["", "### Test split (scored once, after the decision)", "",
                  "| model | important_f1 | Nomenclature F1 | Description F1 |", "|---|---|---|---|"]
        for name in ("recommended", "unweighted"):
            if name in test:
                s = test[name]["stats"]
                lines.append(f"| {name} | {s['important_f1']:.4f} | {s['Nomenclature_f1']:.4f} | "
                             f"{s['Description_f1']:.4f} |")
    lines += ["", "Paste into SKOL:", "", "```python", paste_snippet(recommendation), "```"]
    return "\n".join(lines)


def _save_notes(study: optuna.Study, state: dict, recommendation: dict, test: dict | None = None) -> None:
    """Study note with the decision; each confirmed trial's note gains its per-unit scores."""
    try:
        import optuna_dashboard
        # The private helpers write notes of finished trials too; save_note takes only a live trial.
        from optuna_dashboard._note import get_note_from_system_attrs, save_note_with_version
    except ImportError:
        return
    try:
        optuna_dashboard.save_note(study, study_note(recommendation, test))
        storage, study_id = study._storage, study._study_id
        trial_ids = {t.number: t._trial_id for t in study.get_trials(deepcopy=False)}
        for name, cand in state["candidates"].items():
            if cand.get("trial") is None or name == THRESHOLDS or not cand["units"]:
                continue
            trial_id = trial_ids[cand["trial"]]
            table = "\n".join([CONFIRMATION_MARK, "", f"**confirmation ({name})**, scores per unit:", "",
                               "| unit | important_f1 | Nomenclature F1 | Description F1 |", "|---|---|---|---|"]
                              + [f"| {k} | {u['scores']['important_f1']:.4f} | {u['scores']['Nomenclature_f1']:.4f} "
                                 f"| {u['scores']['Description_f1']:.4f} |" for k, u in sorted(cand["units"].items())])
            old = get_note_from_system_attrs(storage.get_study_system_attrs(study_id), trial_id)
            kept = old["body"].split(CONFIRMATION_MARK)[0].rstrip()  # the trial's own note stays
            save_note_with_version(storage, study_id, trial_id, old["version"] + 1,
                                   f"{kept}\n\n{table}" if kept else table)
    except Exception as exc:  # notes are a view; never lose a result over one
        logger.warning(f"could not save dashboard notes: {exc}")


# --------------------------------------------------------------------------- the test split, once

def final_test_evaluation(study: optuna.Study, prepared, storage_url: str) -> dict | None:
    """Score the recommended configuration and the unweighted model once on the test split.

    Runs after the decision and changes nothing in it; stored as the ``test_stats`` user attr
    and shown in the study's note.
    """
    from ..metrics import compute_stats
    from ..posthoc import adjusted_predictions
    from ..predict import one_hot_probs
    from ..train import evaluate, load_bundle, predict_probs, save_bundle, train_model

    rec = study.user_attrs.get("recommendation")
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
        pred, multipliers = adjusted_predictions(predict_probs(u_model, val, u_cfg), val.y,
                                                 predict_probs(u_model, test, u_cfg))
        rec = dict(rec, multipliers=dict(zip(CLASSES, map(float, multipliers))))
        study.set_user_attr("recommendation", rec)
        result["recommended"] = {"trial": u_number, "multipliers": rec["multipliers"],
                                 "stats": compute_stats(test.y, one_hot_probs(pred))}
    else:
        result["recommended"] = result["unweighted"]
    study.set_user_attr("test_stats", result)
    _save_notes(study, study.user_attrs.get("confirmation") or {"candidates": {}}, rec, result)
    logger.info(f"test split (scored once, after the decision): recommended {result['recommended']['stats']['important_f1']:.4f}, "
        f"unweighted {result['unweighted']['stats']['important_f1']:.4f}")
    return result


def recommended_model(storage_url: str, study_name: str) -> tuple[Path, dict | None]:
    """The saved model a study recommends, and the post-hoc multipliers to apply (``None``: plain argmax).

    With a recommendation that is the recommended weights' model or, for no weights and thresholds,
    the unweighted model; a study without one (confirmation not run yet) falls back to its best trial.
    """
    study = tuned_study(storage_url, study_name)
    complete = completed_trials(study)
    rec = study.user_attrs.get("recommendation")
    number = rec["trial"] if rec and rec.get("trial") is not None else max(complete, key=trial_score).number
    multipliers = rec.get("multipliers") if rec and rec["decision"] == "thresholds" else None
    path = model_path(models_dir(storage_url, study_name), number)
    if not path.exists():
        raise StudyError(f"the model of trial {number} is not at {path} (models are kept on the machine that ran "
                         "the study); use weight-tuner train --save-model with the exported weights")
    return path, multipliers
