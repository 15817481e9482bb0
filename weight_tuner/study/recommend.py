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
from optuna.trial import TrialState

from ..config import CLASSES, validate_config
from ..errors import StudyError
from ..paths import model_path, models_dir
from .storage import FINISHED, completed_trials, trial_config, trial_score, tuned_study
from .units import make_units, run_unit, unit_data

logger = logging.getLogger(__name__)

LEVEL = 0.95
INTERVAL_METHOD = ("corrected resampled t (Nadeau & Bengio 2003): the variance of the mean difference is "
                   "inflated by held-out/training lines, because units share training data; one interval per "
                   "candidate, no multiplicity correction")
UNWEIGHTED = "unweighted"
CONFIRMATION_MARK = "### Confirmation"
THRESHOLDS = "thresholds"


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


# --------------------------------------------------------------------------- candidates

def _weights_key(weights: dict | None) -> tuple:
    return tuple(round(math.log(weights[c]), 6) for c in CLASSES) if weights else (0.0,) * len(CLASSES)


def select_candidates(study: optuna.Study, top: int) -> dict[str, dict]:
    """The unweighted model, the ``top`` best distinct weight vectors and the threshold competitor.

    Weight vectors are compared by their trained (normalised) values, so schemes with the same
    ratios count once. Names are ``unweighted``, ``thresholds`` and ``trial N``.
    """
    complete = sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)),
                      key=lambda t: (-trial_score(t), t.number))
    base = validate_config(dict(study.user_attrs["model_config"], class_weights=None))
    unweighted_trial = _unweighted_number(study)
    out = {UNWEIGHTED: {"kind": "unweighted", "trial": unweighted_trial, "config": base, "class_weights": None},
           THRESHOLDS: {"kind": "thresholds", "trial": unweighted_trial, "config": base, "class_weights": None}}
    seen = {_weights_key(None)}
    for t in complete:
        if len(out) - 2 >= top:
            break
        trained = t.user_attrs.get("class_weights_trained", t.user_attrs.get("class_weights"))
        key = _weights_key(trained)
        if key in seen:
            continue
        seen.add(key)
        config = trial_config(study, t)
        out[f"trial {t.number}"] = {"kind": "weights", "trial": t.number, "config": config,
                                    "class_weights": trained, "scheme": t.user_attrs.get("scheme"),
                                    "val_important_f1": trial_score(t)}
    return out


# --------------------------------------------------------------------------- confirmation

def confirm(study: optuna.Study, prepared, evaluation: dict, after_unit=None, stop=None) -> dict:
    """Score every candidate on every unit not yet done, saving after each; then decide.

    ``evaluation`` holds ``folds``, ``repeats``, ``top`` and ``first_repeat``. The state lives in
    the study's ``confirmation`` user attr; ``after_unit(name, unit)`` is called after each
    saved result; ``stop`` (a :class:`.signals.StopGuard`) stops between training batches.
    Returns the recommendation, also stored as the ``recommendation`` user attr.
    """
    from ..model import ModelCache

    folds, repeats = evaluation["folds"], evaluation["repeats"]
    units = make_units(folds, repeats, evaluation.get("first_repeat", 0))
    candidates = select_candidates(study, evaluation["top"])
    state = study.user_attrs.get("confirmation") or {}
    saved = state.get("candidates", {})
    results: dict[str, dict] = {}
    for name, cand in candidates.items():
        old = saved.get(name, {})
        same = old.get("config") == _config_key(cand["config"])
        results[name] = {k: v for k, v in cand.items() if k != "config"}
        results[name].update(config=_config_key(cand["config"]), units=old.get("units", {}) if same else {})
    state = {"folds": folds, "repeats": repeats, "units": [u.key for u in units], "candidates": results}
    todo = [(u, n) for u in units for n in candidates if n != THRESHOLDS and u.key not in results[n]["units"]]
    total, done = len(units) * (len(candidates) - 1), len(units) * (len(candidates) - 1) - len(todo)
    logger.info(f"confirming {len(candidates) - 2} weight candidates, the unweighted model and thresholds on "
        f"{len(units)} units ({folds} folds x {repeats} repeats): {done}/{total} unit runs already done")
    current = None
    cache = ModelCache()  # one compiled model per architecture, re-initialised for every unit run
    with stop.safe_points() if stop is not None else nullcontext():
        for unit, name in todo:
            if stop is not None:
                stop.check()
            if current is None or current[0] != unit:
                current = (unit, unit_data(prepared, unit, folds))
            res = run_unit(current[1], candidates[name]["config"], unit, thresholds=name == UNWEIGHTED,
                           seed=unit.repeat, should_stop=stop.check if stop is not None else None, cache=cache)
            results[name]["units"][unit.key] = {k: v for k, v in res.items() if k != "thresholds"}
            if name == UNWEIGHTED:
                results[THRESHOLDS]["units"][unit.key] = dict(res, scores=res["thresholds"])
                results[THRESHOLDS]["units"][unit.key].pop("thresholds")
            study.set_user_attr("confirmation", state)
            done += 1
            logger.info(f"confirm {done}/{total}: {name} on unit {unit.key}: important_f1 "
                f"{res['scores']['important_f1']:.4f} ({res['seconds']:.0f}s)")
            if after_unit is not None:
                after_unit(name, unit)
    recommendation = recommendation_from(state, evaluation)
    recommendation["finished_trials"] = len(study.get_trials(deepcopy=False, states=FINISHED))
    study.set_user_attr("recommendation", recommendation)
    _save_notes(study, state, recommendation)
    return recommendation


def _config_key(config: dict) -> dict:
    return {k: v for k, v in config.items() if k != "verbosity"}


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


def _unweighted_number(study: optuna.Study) -> int | None:
    return next((t.number for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                 if t.user_attrs.get("scheme") == UNWEIGHTED), None)


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
