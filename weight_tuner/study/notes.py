"""What a person reads about a recommendation: the candidates table, the decision sentence, the line
to paste, the deployed model, and the study's and trials' optuna-dashboard notes (one adapter for the
dashboard's note API).
"""

from __future__ import annotations

import json
import logging

import optuna

from ..config import CLASSES
from .space import METRIC_NAME
from .storage import store_recommendation
from .unitruns import THRESHOLDS, UNWEIGHTED

logger = logging.getLogger(__name__)

CONFIRMATION_MARK = "### Confirmation"
PENDING_DECISION = "not made yet: the search runs, then the confirmation decides (see the Note page)"
THRESHOLDS_MEANING = ("thresholds: the unweighted model with per-class probability multipliers (argmax of m_c p_c), "
                      "fitted on held-out data after training.")


def trial_line(trial: optuna.trial.FrozenTrial) -> str:
    """One finished trial as the progress log shows it: number, state, scheme, weights as given, value."""
    value = "-" if not trial.values else "/".join(f"{v:.4f}" for v in trial.values)
    weights = trial.user_attrs.get("class_weights") or {}
    reason = trial.user_attrs.get("fail_reason", "")
    return (f"trial {trial.number} {trial.state.name.lower()} {trial.user_attrs.get('scheme', '')} "
            f"weights {', '.join(f'{c[:4]} {weights[c]:.3g}' for c in weights)} -> {METRIC_NAME} {value} {reason}")


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
    if stopped_sentence(recommendation):
        rows.append(stopped_sentence(recommendation))
    return "\n".join(rows)


def stopped_sentence(recommendation: dict) -> str:
    """Which candidates the race stopped, after how many units, and why ('' when none was stopped)."""
    stopped = [r for r in recommendation["candidates"] if r.get("stopped_after")]
    if not stopped:
        return ""
    which = ", ".join(f"{r['candidate']} after {r['stopped_after']} unit{'s' if r['stopped_after'] > 1 else ''}"
                      for r in stopped)
    return (f"Stopped early (racing): {which}. No scores of their remaining units could have put their interval "
            f"above 0, so those runs were not trained; their rows cover the units they ran.")


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
    if best and all(r.get("stopped_after") for r in recommendation["candidates"][1:]):
        why = (f" Every candidate was stopped early (racing): after the units it ran, no scores of its remaining "
               f"units could have put its interval above 0. The closest, {best['candidate']}, stood at "
               f"{best['diff']['mean']:+.4f} over {best['stopped_after']} unit{'s' if best['stopped_after'] > 1 else ''}.")
    return f"Use no class weights: no candidate beat the unweighted model with an interval clear of 0.{why}"


def paste_snippet(recommendation: dict) -> str:
    """What to put in a SKOL model_config."""
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
    cal = deployed.get("calibration")
    n_refits = refit.get("models", 1) if refit else 0  # entries made before refits were counted hold one
    refits = "one model" if n_refits == 1 else f"the mean of {n_refits} models"
    text = {"ensemble": f"Ensemble: {ens}.",
            "single": f"Single: the search's model of trial {deployed['single']['trial']} (its training split).",
            "refit": (f"Refit: {refits} on every non-test line ({refit['train_lines']} lines)." if refit
                      else "Refit: not made (tune --refits N)."),
            "calibration": (f"Each model's probabilities are calibrated first: temperature {cal['temperature']:.3f}, "
                            f"biases {', '.join(f'{b:+.3f}' for b in cal['biases'])}, fitted on {cal['fitted_on']}."
                            if cal else "No calibration.")}
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
             *([stopped_sentence(recommendation), ""] if stopped_sentence(recommendation) else []),
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


# --------------------------------------------------------------------------- the dashboard's note API
# Every call into optuna-dashboard's notes goes through these two functions. Its public `save_note`
# writes a study's note or a running trial's; a finished trial's note is rewritten with its private
# helpers, kept here in one place. A note is a view: a failure to write one is a warning, never a lost result.

def save_live_note(study_or_trial, body: str) -> None:
    """The note of a study or of a running trial."""
    try:
        import optuna_dashboard

        optuna_dashboard.save_note(study_or_trial, body)
    except Exception as exc:
        logger.warning(f"could not save a dashboard note: {exc}")


def append_to_finished_note(study: optuna.Study, number: int, marker: str, text: str) -> None:
    """Replace what follows ``marker`` in finished trial ``number``'s note with ``text`` (the trial's own note stays)."""
    try:
        from optuna_dashboard._note import get_note_from_system_attrs, save_note_with_version

        storage, study_id = study._storage, study._study_id
        trial_id = next(t._trial_id for t in study.get_trials(deepcopy=False) if t.number == number)
        old = get_note_from_system_attrs(storage.get_study_system_attrs(study_id), trial_id)
        kept = old["body"].split(marker)[0].rstrip()
        save_note_with_version(storage, study_id, trial_id, old["version"] + 1, f"{kept}\n\n{text}" if kept else text)
    except Exception as exc:
        logger.warning(f"could not save the dashboard note of trial {number}: {exc}")


def save_notes(study: optuna.Study, state: dict, recommendation: dict, test: dict | None = None) -> None:
    """Study note with the decision; each confirmed trial's note says what the confirmation found."""
    save_live_note(study, study_note(recommendation, test))
    for name, cand in state["candidates"].items():
        if cand.get("trial") is None or name == THRESHOLDS or not cand["units"]:
            continue
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
        append_to_finished_note(study, cand["trial"], CONFIRMATION_MARK, table)


def publish(study: optuna.Study, recommendation: dict) -> None:
    """Store ``recommendation`` changed after the decision (the refits made) and refresh its views: the
    ``decision`` attr and the notes, with the test check where it was made."""
    store_recommendation(study, recommendation)
    study.set_user_attr("decision", decision_attr(recommendation))
    save_notes(study, study.user_attrs.get("confirmation") or {"candidates": {}}, recommendation,
               study.user_attrs.get("test_stats"))
