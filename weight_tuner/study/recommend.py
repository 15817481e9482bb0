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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna

from ..config import CLASSES, validate_config
from ..errors import StudyError
from ..paths import model_path, models_dir
from .members import DEFAULT_DEPLOYED, REFIT_NAME, class_fractions, ensemble_of, fetch_member, mean_fractions
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
THRESHOLDS_MEANING = ("thresholds: the unweighted model with per-class probability multipliers (argmax of m_c p_c), "
                      "fitted on held-out data after training.")


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
            wait: bool = True, members: Path | None = None) -> dict | None:
    """Take the confirmation's unit runs (through the storage, with every other process of the study),
    then decide.

    ``evaluation`` holds ``folds``, ``repeats``, ``top`` and ``first_repeat``. The runs are trials of a
    companion study (:mod:`.unitruns`), planned once from the finished search; finished runs are never
    redone. After each run this process finishes, the study's ``confirmation`` user attr is updated
    and ``after_unit(name, unit)`` called; ``stop`` (a :class:`.signals.StopGuard`) stops between
    training batches. With ``wait`` (``tune``) this returns the recommendation once every run is done,
    also stored as the ``recommendation`` user attr; without (a ``worker``), it returns ``None`` when no
    run is left to take. With ``members`` (a folder) every run's model is kept there, and the
    recommendation names the recommended candidate's models as the deployed ensemble.
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
            take_runs(companion, plan, prepared, stop, after_run, members)
            return None
        wait_for_runs(companion, plan, prepared, stop, after_run, members=members)
    finished = results(companion)
    state = state_of(plan, finished)
    study.set_user_attr("confirmation", state)
    recommendation = recommendation_from(state, evaluation)
    recommendation["finished_trials"] = len(study.get_trials(deepcopy=False, states=FINISHED))
    recommendation["confirmation_study"] = companion.study_name
    recommendation["deployed"] = deployed_models(study, companion, finished, recommendation)
    study.set_user_attr("recommendation", recommendation)
    study.set_user_attr("decision", decision_attr(recommendation))
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
            "ensemble": {"members": members,
                         "trained_on": "each member: the unit's training folds of the non-test chunks"},
            "single": {"trial": recommendation["trial"], "train_class_counts": counts.get("train"),
                       "trained_on": "the search's training split"}}


def unit_multipliers(units: dict) -> dict[str, float] | None:
    """The thresholds decision's multipliers: the geometric mean of those fitted on each unit's held-out
    fold (validation data of the models the decision rests on), scaled so that Misc's is 1; ``None`` for
    unit runs made before multipliers were stored."""
    fitted = [u["multipliers"] for u in units.values() if u.get("multipliers")]
    if not fitted or len(fitted) < len(units):
        return None
    logs = {c: float(np.mean([math.log(m[c]) for m in fitted])) for c in CLASSES}
    return {c: float(f"{math.exp(logs[c] - logs['Misc']):.6g}") for c in CLASSES}


# --------------------------------------------------------------------------- views

def candidates_table(recommendation: dict) -> str:
    """The candidates with their mean important_f1 and paired difference to no weights, as text."""
    pct = int(round(recommendation["level"] * 100))
    rows = [f"{'candidate':<14}{'weights N / D / M, as trained':<31}{'important_f1':>13}{'diff vs none':>14}"
            f"{f'{pct}% interval':>22}"]
    for r in recommendation["candidates"]:
        w = r.get("class_weights")
        ws = " / ".join(f"{w[c]:.3g}" for c in CLASSES) if w else "-"
        d = r["diff"]
        interval = f"[{d['ci_low']:+.4f}, {d['ci_high']:+.4f}]"
        rows.append(f"{r['candidate']:<14}{ws:<31}{r['mean']:>13.4f}{d['mean']:>+14.4f}{interval:>22}")
    rows.append(f"important_f1: mean over the {recommendation['n_units']} units' held-out folds. {THRESHOLDS_MEANING}")
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


def decision_attr(recommendation: dict) -> str:
    """The short ``decision`` user attr, the first row of the dashboard's study page: what to paste and why."""
    return (f"{recommendation['decision']}: {paste_snippet(recommendation)}. {decision_sentence(recommendation)} "
            f"predict --study uses the {(recommendation.get('deployed') or {}).get('default', 'single')} model.")


def deployed_sentence(recommendation: dict) -> str:
    """What ``predict --study`` uses by default, its members and what they were trained on."""
    deployed = recommendation.get("deployed")
    if not deployed:
        return "The search's model of the recommended trial (this study kept no confirmation models)."
    members = deployed["ensemble"]["members"]
    ens = (f"the mean of {len(members)} confirmation models of {deployed['candidate']} (units "
           f"{', '.join(m['unit'] for m in members)}; each trained on its unit's training folds, "
           f"{min(m['train_lines'] for m in members)}-{max(m['train_lines'] for m in members)} lines)"
           if members else "none kept")
    refit = deployed.get("refit")
    text = {"ensemble": f"Ensemble: {ens}.",
            "single": f"Single: the search's model of trial {deployed['single']['trial']} (its training split).",
            "refit": (f"Refit: one model on every non-test line ({refit['train_lines']} lines)." if refit
                      else "Refit: not made (tune --refit).")}
    order = [deployed["default"]] + [k for k in text if k != deployed["default"]]
    return " ".join([f"Default: {deployed['default']}."] + [text[k] for k in order])


def study_note(recommendation: dict, test: dict | None = None) -> str:
    """The study-level dashboard note: decision, candidates table with intervals, test check, snippet."""
    pct = int(round(recommendation["level"] * 100))
    lines = ["## Recommendation", "", decision_sentence(recommendation), "",
             f"Paired over {recommendation['n_units']} units ({recommendation['folds']} folds x "
             f"{recommendation['repeats']} repeats). Interval: {pct}%, {recommendation['interval']}.", "",
             f"important_f1 is the mean over the units' held-out folds; weights are as trained (the values to "
             f"paste). {THRESHOLDS_MEANING}", "",
             "| candidate | weights N / D / M (as trained) | important_f1 | diff vs no weights | interval |",
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
        for name in ("recommended", "unweighted", "ensemble"):
            if name in test:
                s = test[name]["stats"]
                lines.append(f"| {name} | {s['important_f1']:.4f} | {s['Nomenclature_f1']:.4f} | "
                             f"{s['Description_f1']:.4f} |")
    lines += ["", "### Deployed model (`predict --study`)", "", deployed_sentence(recommendation)]
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
            row = next((r for r in recommendation["candidates"] if r["candidate"] == name), None)
            found = ("the reference every candidate is paired against" if name == UNWEIGHTED or row is None else
                     f"mean important_f1 {row['mean']:.4f}, {row['diff']['mean']:+.4f} against no weights, interval "
                     f"[{row['diff']['ci_low']:+.4f}, {row['diff']['ci_high']:+.4f}]")
            chosen = "recommended" if recommendation["candidate"] == name else "not recommended"
            table = "\n".join([CONFIRMATION_MARK, "", f"This trial was confirmed as candidate **{name}** ({chosen}): "
                                f"{found}.", "", "Scores per unit (held-out folds):", "",
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

def ensemble_probs(bundles: list[Path], split, multipliers: dict | None = None) -> np.ndarray:
    """The mean of the bundles' per-line probabilities on ``split`` (re-weighted by ``multipliers``)."""
    from ..train import load_bundle, predict_probs

    probs = []
    for path in bundles:
        model, _, cfg = load_bundle(path)
        probs.append(predict_probs(model, split, cfg))
    mean = np.mean(probs, axis=0)
    if multipliers:
        mean = mean * np.array([multipliers[c] for c in CLASSES], dtype=mean.dtype)
        mean = mean / mean.sum(axis=1, keepdims=True)
    return mean


def recommended_config(study: optuna.Study, recommendation: dict) -> dict:
    """The model config of the recommendation: the weights trial's, else the unweighted one."""
    if recommendation["decision"] == "weights":
        trial = next(t for t in study.get_trials(deepcopy=False) if t.number == recommendation["trial"])
        return trial_config(study, trial)
    return validate_config(dict(study.user_attrs["model_config"], class_weights=None))


def refit(study: optuna.Study, prepared, storage_url: str) -> dict:
    """Train the recommended configuration once on every non-test line, save it beside the study's
    models, and score it once on the test split (deciding nothing). Returns its ``deployed.refit`` entry."""
    from ..metrics import compute_stats
    from ..train import predict_probs, save_bundle, train_model
    from .units import refit_data

    rec = study.user_attrs.get("recommendation")
    if rec is None or "deployed" not in rec:
        raise StudyError(f"study {study.study_name!r} has no recommendation to refit; run tune without --no-confirm")
    config = recommended_config(study, rec)
    data = refit_data(prepared)
    logger.info(f"refitting {rec['deployed']['candidate']} on {data.splits['train'].n} non-test lines")
    model, _ = train_model(data, config)
    path = models_dir(storage_url, study.study_name) / REFIT_NAME
    save_bundle(model, prepared.featurizer, config, path, prepared.label_map)
    test = prepared.splits["test"]
    probs = predict_probs(model, test, config)
    if rec.get("multipliers"):
        probs = probs * np.array([rec["multipliers"][c] for c in CLASSES], dtype=probs.dtype)
    entry = {"train_lines": int(data.splits["train"].n), "train_class_counts": data.splits["train"].class_counts(),
             "trained_on": "every non-test line (train and validation splits)",
             "test_important_f1": float(compute_stats(test.y, probs)["important_f1"])}
    rec = dict(rec, deployed=dict(rec["deployed"], refit=entry))
    study.set_user_attr("recommendation", rec)
    logger.info(f"refit model saved at {path}; test important_f1 {entry['test_important_f1']:.4f} (scored once)")
    return entry


def final_test_evaluation(study: optuna.Study, prepared, storage_url: str,
                          members_folder: str | Path | None = None) -> dict | None:
    """Score the recommended configuration and the unweighted model once on the test split.

    Runs after the decision and changes nothing in it; stored as the ``test_stats`` user attr
    and shown in the study's note. The deployed ensemble (when models were kept) is scored too.
    """
    from ..metrics import compute_stats
    from ..posthoc import fit_adjustment
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
        multipliers = rec.get("multipliers")
        if multipliers is None:  # a decision made before the units stored their multipliers: fit on validation
            fitted, _ = fit_adjustment(predict_probs(u_model, val, u_cfg), val.y)
            multipliers = dict(zip(CLASSES, map(float, fitted)))
            rec = dict(rec, multipliers=multipliers)
            study.set_user_attr("recommendation", rec)
        probs = predict_probs(u_model, test, u_cfg) * np.array([multipliers[c] for c in CLASSES])
        result["recommended"] = {"trial": u_number, "multipliers": multipliers,
                                 "stats": compute_stats(test.y, one_hot_probs(probs.argmax(axis=1)))}
    else:
        result["recommended"] = result["unweighted"]
    members = ((rec.get("deployed") or {}).get("ensemble") or {}).get("members")
    if members:
        bundles = [fetch_member(m, models / "members", members_folder) for m in members]
        probs = ensemble_probs(bundles, prepared.splits["test"], rec.get("multipliers"))
        result["ensemble"] = {"members": len(bundles), "stats": compute_stats(prepared.splits["test"].y, probs)}
    study.set_user_attr("test_stats", result)
    _save_notes(study, study.user_attrs.get("confirmation") or {"candidates": {}}, rec, result)
    logger.info(f"test split (scored once, after the decision): recommended {result['recommended']['stats']['important_f1']:.4f}, "
        f"unweighted {result['unweighted']['stats']['important_f1']:.4f}")
    return result


@dataclass(frozen=True)
class Deployed:
    """The model ``predict --study`` uses: its kind, bundle paths (several for an ensemble), the post-hoc
    multipliers (``None``: plain argmax) and the class balance it was trained on (for prior adaptation)."""

    kind: str
    bundles: list[Path]
    multipliers: dict | None
    train_prior: dict[str, float] | None
    description: str


def recommended_model(storage_url: str, study_name: str, use: str | None = None,
                      members: str | Path | None = None) -> Deployed:
    """The deployed model of a study's recommendation: ``use`` (``ensemble``, ``refit`` or ``single``), by
    default the recommendation's own default (:data:`.members.DEFAULT_DEPLOYED`).

    The ensemble is the recommended candidate's confirmation models (unpacked once into the study's
    models folder; ``members`` overrides where their store is); ``single`` is the search's model of the
    recommended trial (the unweighted one for no weights and thresholds). A study without a
    recommendation falls back to its best trial's model. Anything missing is a :class:`StudyError`.
    """
    study = tuned_study(storage_url, study_name)
    rec = study.user_attrs.get("recommendation")
    multipliers = rec.get("multipliers") if rec and rec["decision"] == "thresholds" else None
    deployed = (rec or {}).get("deployed")
    kind = use or (deployed["default"] if deployed else "single")
    models = models_dir(storage_url, study_name)
    if kind != "single" and deployed is None:
        raise StudyError(f"study {study_name!r} has no deployed {kind} (its confirmation has not run, or ran "
                         "before models were kept); use --use single")
    if kind == "ensemble":
        found = deployed["ensemble"]["members"]
        if not found:
            raise StudyError(f"study {study_name!r} kept no ensemble members (confirmed before models were kept); "
                             "use --use single")
        bundles = [fetch_member(m, models / "members", members) for m in found]
        prior = mean_fractions([m["train_class_counts"] for m in found if m.get("train_class_counts")] or
                               [study.user_attrs["class_counts"]["train"]])
        return Deployed("ensemble", bundles, multipliers, prior,
                        f"ensemble of {len(bundles)} confirmation models of {deployed['candidate']} "
                        f"(units {', '.join(m['unit'] for m in found)})")
    if kind == "refit":
        refit = deployed.get("refit")
        path = models / REFIT_NAME
        if refit is None or not path.exists():
            raise StudyError(f"study {study_name!r} has no refit model at {path}; run tune again with --refit")
        return Deployed("refit", [path], multipliers, class_fractions(refit["train_class_counts"]),
                        f"refit of {deployed['candidate']} on {refit['train_lines']} non-test lines")
    number = rec["trial"] if rec and rec.get("trial") is not None else max(completed_trials(study),
                                                                           key=trial_score).number
    path = model_path(models, number)
    if not path.exists():
        raise StudyError(f"the model of trial {number} is not at {path} (models are kept on the machine that ran "
                         "the study); use weight-tuner train --save-model with the exported weights")
    return Deployed("single", [path], multipliers, class_fractions(study.user_attrs["class_counts"]["train"]),
                    f"the search's model of trial {number}")
