"""What a person reads about a recommendation: the candidates table, the decision sentence, the line
to paste, the deployed model, and the study's and trials' optuna-dashboard notes (one adapter for the
dashboard's note API).
"""

from __future__ import annotations

import json
import logging
import textwrap

import optuna

from . import formats as fmt
from .config import CLASSES
from .metrics import IMPORTANT
from .records import Recommendation
from .schemes import THRESHOLDS, UNWEIGHTED
from .space import METRIC_NAME
from .storage import store_recommendation

logger = logging.getLogger(__name__)

CONFIRMATION_MARK = "### Confirmation"
# The test split's rows in every view, and what each model is.
TEST_ROWS = {"recommended": "recommended, the search's single model", "unweighted": "unweighted, the search's single model",
             "ensemble": "the confirmation's models of the recommendation, averaged"}
SMALL_TEST_CAUTION = ("The test split is small (see its lines per class): a test score some points above or below the "
                      "confirmation's mean is within its noise; the decision rests on the paired confirmation.")
PENDING_DECISION = "not made yet: the search runs, then the confirmation decides (see the Note page)"
THRESHOLDS_MEANING = ("thresholds: the unweighted model with per-class probability multipliers (argmax of m_c p_c), "
                      "fitted on held-out data after training.")


def trial_line(trial: optuna.trial.FrozenTrial) -> str:
    """One finished trial as the progress log shows it: number, state, scheme, weights as given, value."""
    value = "-" if not trial.values else "/".join(f"{v:.4f}" for v in trial.values)
    weights = trial.user_attrs.get("class_weights") or {}
    reason = trial.user_attrs.get("fail_reason", "")
    return (f"trial {trial.number} {trial.state.name.lower()} {trial.user_attrs.get('scheme', '')} "
            f"weights N / D / M {fmt.weights(weights)} -> {METRIC_NAME} {value} {reason}")


def candidates_table(recommendation: Recommendation) -> str:
    """The candidates with their mean important_f1 and paired difference to no weights, as text."""
    # 100 columns at most: the widest interval is 31 characters
    rows = [f"{'candidate':<11}{'weights N / D / M':<23}{'units':>6}{'important_f1':>13}{fmt.VS_NONE:>14}  "
            "with its interval"]
    for r in recommendation.candidates:
        rows.append(f"{r.candidate:<11}{fmt.weights(r.class_weights):<23}{r.diff.n_units:>6}{fmt.score(r.mean):>13}"
                    f"{fmt.diff(r.diff.mean):>14}  {fmt.diff_interval(r.diff, recommendation.level)}")
    notes = [f"important_f1: mean over the units' held-out folds (units: how many of the {recommendation.n_units} "
             f"each candidate ran; {fmt.VS_NONE} is paired on those); weights as trained. {THRESHOLDS_MEANING}",
             stopped_sentence(recommendation)]
    rows += [textwrap.fill(note, 100) for note in notes if note]
    return "\n".join(rows)


def _units(n: int) -> str:
    return f"{n} unit{'s' if n > 1 else ''}"


def stopped_sentence(recommendation: Recommendation) -> str:
    """Which candidates the race stopped, after how many units, and why ('' when none was stopped)."""
    stopped = [r for r in recommendation.candidates if r.stopped_after]
    if not stopped:
        return ""
    which = ", ".join(f"{r.candidate} after {_units(r.stopped_after)}" for r in stopped)
    sentence = (f"Stopped early (racing): {which}. No scores of their remaining units could have put their interval "
                f"above 0, so those runs were not trained; their rows cover the units they ran.")
    base, needed = recommendation.candidates[0], max(r.stopped_after for r in stopped)
    if len(stopped) == len(recommendation.challengers) and base.diff.n_units > needed:
        sentence += (f" No weights ran all {_units(base.diff.n_units)} even so: the decision needed {needed}, and the "
                     f"deployed model (its members and calibration) rests on all {base.diff.n_units}.")
    return sentence


def decision_sentence(recommendation: Recommendation) -> str:
    """One sentence: what to use and why (and, where a time budget cut the work short, what it rests on)."""
    return _decision(recommendation) + time_limited_sentence(recommendation)


def time_limited_sentence(recommendation: Recommendation) -> str:
    """What a spent ``--timeout`` cut short ('' where it cut nothing)."""
    cut = recommendation.time_limited
    if not cut:
        return ""
    search = (f"the search stopped at {cut['trials']} of {cut['trials_asked']} trials and "
              if cut.get("trials_asked") and cut["trials"] < cut["trials_asked"] else "")
    return (f" Decided under a time limit (--timeout {cut['timeout']}): {search}{cut['runs_done']} of "
            f"{cut['runs_planned']} unit runs were done or not needed; run tune again to finish the rest and decide "
            "again.")


def _decision(recommendation: Recommendation) -> str:
    d, n, level = recommendation.diff_vs_unweighted, recommendation.n_units, recommendation.level
    if recommendation.decision == "weights":
        return (f"Use class weights Nomenclature / Description / Misc = {fmt.weights(recommendation.class_weights)} "
                f"({recommendation.candidate}): important_f1 {fmt.diff(d.mean)} {fmt.VS_NONE} over {n} paired units, "
                f"{fmt.diff_interval(d, level)}, clear of 0.")
    if recommendation.decision == "thresholds":
        return (f"Use no class weights, with post-hoc per-class thresholds: important_f1 {fmt.diff(d.mean)} "
                f"{fmt.VS_NONE} (plain argmax) over {n} paired units, {fmt.diff_interval(d, level)}, "
                "clear of 0.")
    best = max(recommendation.challengers, key=lambda r: r.diff.mean, default=None)
    why = (f" The best candidate ({best.candidate}) is {fmt.diff(best.diff.mean)} {fmt.VS_NONE}, "
           f"{fmt.diff_interval(best.diff, level)}, which includes 0." if best else "")
    if best and all(r.stopped_after for r in recommendation.challengers):
        why = (f" Every candidate was stopped early (racing): after the units it ran, no scores of its remaining "
               f"units could have put its interval above 0. The closest, {best.candidate}, stood at "
               f"{fmt.diff(best.diff.mean)} {fmt.VS_NONE} over {_units(best.stopped_after)}.")
    return (f"Use no class weights: no candidate beat the unweighted model with an interval clear of 0.{why}"
            f"{detectable_sentence(recommendation)}")


def detectable_sentence(recommendation: Recommendation) -> str:
    """For a no-weights decision: the smallest gain this confirmation finds 80% of the time at the noise it
    measured, and what more repeats would find ('' where the noise was not measured)."""
    found, rec = recommendation.detectable, recommendation
    if not found or recommendation.decision != "no_weights":
        return ""
    more, wider = found["more_repeats"], found["gain_with_more_repeats"]
    return (f" That says \"not shown\", not \"no effect\": at the noise measured (sd {fmt.score(found['sd'])} of the "
            f"paired unit differences), {found['n_units']} units find a true gain of {fmt.diff(found['gain'])} "
            f"{int(round(found['power'] * 100))}% of the time, and smaller gains less often; a new study with "
            f"--repeats {more} ({rec.folds * more} units) would find {fmt.diff(wider)}.")


def paste_snippet(recommendation: Recommendation) -> str:
    """What to put in a SKOL model_config."""
    weights = recommendation.class_weights
    return 'model_config["class_weights"] = ' + (json.dumps(weights) if weights else "None")


def decision_attr(recommendation: Recommendation) -> str:
    """The ``decision`` user attr, the first row of the dashboard's study page: the decision in words, then what to
    paste (the decision bar reads the kind from the sentence's first words)."""
    return (f"{decision_sentence(recommendation)} Paste into SKOL: {paste_snippet(recommendation)}. "
            f"predict --study uses the {recommendation.default_model} model.")


def deployed_sentence(recommendation: Recommendation) -> str:
    """What ``predict --study`` uses by default, its members and what they were trained on."""
    deployed = recommendation.deployed
    if not deployed:
        return "The search's model of the recommended trial (this study kept no confirmation models)."
    members = deployed.members
    ens = (f"the mean of {len(members)} confirmation models of {deployed.candidate} (units "
           f"{', '.join(m['unit'] for m in members)}; each trained on its unit's training folds, "
           f"{min(m['train_lines'] for m in members)}-{max(m['train_lines'] for m in members)} lines)"
           if members else "none kept")
    refit, cal = deployed.refit, deployed.calibration
    n_refits = refit.get("models", 1) if refit else 0  # entries made before refits were counted hold one
    refits = "one model" if n_refits == 1 else f"the mean of {n_refits} models"
    text = {"ensemble": f"ensemble, {ens}.",
            "single": f"single, the search's model of trial {deployed.single['trial']} (its training split).",
            "refit": (f"refit, {refits} on every non-test line ({refit['train_lines']} lines)." if refit
                      else "refit, not made (tune --refits N)."),
            "calibration": (f"Each model's probabilities are calibrated first, fitted on {cal['fitted_on']}: its "
                            f"scores are divided by a temperature of {cal['temperature']:.3f} (above 1 makes them less "
                            "confident, below 1 more) and shifted per class by "
                            f"{', '.join(f'{c} {b:+.3f}' for c, b in zip(CLASSES, cal['biases']))}."
                            if cal else "No calibration.")}
    others = [k for k in ("refit", "ensemble", "single") if k != deployed.default]
    return " ".join([text[deployed.default][0].upper() + text[deployed.default][1:],
                     f"Also kept (predict --use {'|'.join(others)}): {text[others[0]]} {text[others[1]]}",
                     text["calibration"]])


def deployed_test(recommendation: Recommendation, test: dict | None) -> dict | None:
    """The test score of the model ``predict --study`` uses by default, one record for every view:
    ``{"kind", "model", "important_f1", "stats"}`` (``None`` before the test check; ``stats``, per class with the
    confusion matrix, ``None`` for refits made before they were kept)."""
    deployed, test = recommendation.deployed, test or {}
    kind = recommendation.default_model
    refit = (deployed.refit if deployed else None) or {}
    stats = {"refit": refit.get("test_stats"), "ensemble": (test.get("ensemble") or {}).get("stats"),
             "single": (test.get("recommended") or {}).get("stats")}.get(kind)
    score = refit.get("test_important_f1") if kind == "refit" else (stats or {}).get("important_f1")
    if score is None:
        return None
    n, candidate = refit.get("models", 1), deployed.candidate if deployed else None
    model = {"refit": f"{n} refit models of {candidate}, averaged" if n > 1 else f"1 refit model of {candidate}",
             "ensemble": f"the {len(deployed.members) if deployed else 0} confirmation models of {candidate}, averaged",
             "single": f"the search's model of trial {recommendation.trial}"}[kind]
    calibrated = " (calibrated)" if deployed and deployed.calibration else ""
    return {"kind": kind, "model": model + calibrated, "important_f1": float(score), "stats": stats}


def units_phrase(rec: Recommendation) -> str:
    """How the units were cut, e.g. ``3 folds x 2 repeats`` or ``3 folds of whole volumes x 2 repeats``; for
    groups, what the interval then assumes."""
    if rec.units_by == "chunk":
        return f"{rec.folds} folds x {rec.repeats} repeats"
    return (f"{rec.folds} folds of whole {rec.units_by}s x {rec.repeats} repeats: each unit scores {rec.units_by}s "
            f"its training folds hold no line of; the interval's correction was derived for random splits, so with "
            f"few, uneven {rec.units_by}s it is an approximation")


def study_note(recommendation: Recommendation, test: dict | None = None) -> str:
    """The study-level dashboard note: decision, candidates table with intervals, test check, snippet."""
    rec = recommendation
    lines = ["## Recommendation", "", decision_sentence(rec), "",
             f"Paired over {rec.n_units} units ({units_phrase(rec)}). "
             f"Interval: {int(round(rec.level * 100))}%, {rec.interval}.", "",
             f"important_f1 is the mean over the units' held-out folds; weights are as trained (the values to "
             f"paste). {THRESHOLDS_MEANING}", "",
             *([stopped_sentence(rec), ""] if stopped_sentence(rec) else []),
             f"| candidate | weights N / D / M (as trained) | important_f1 | {fmt.VS_NONE} | interval |",
             "|---|---|---|---|---|"]
    for r in rec.candidates:
        lines.append(f"| {r.candidate} | {fmt.weights(r.class_weights)} | {fmt.score(r.mean)} | "
                     f"{fmt.diff(r.diff.mean)} | {fmt.diff_interval(r.diff, rec.level)} |")
    if test:
        deployed = deployed_test(rec, test)
        lines += ["", "### Test split (scored once, after the decision)", "",
                  "| model | important_f1 | Nomenclature F1 (lines) | Description F1 (lines) |", "|---|---|---|---|"]
        def row(model: str, score: float, s: dict | None) -> str:  # each F1 beside the test lines it rests on
            per_class = (" | ".join(f"{fmt.score(s[f'{c}_f1'])} ({s[f'{c}_support']})" for c in IMPORTANT)
                         if s else " | ")
            return f"| {model} | {fmt.score(score)} | {per_class} |"

        if deployed:
            lines.append(row(f"deployed: {deployed['model']}", deployed["important_f1"], deployed["stats"]))
        for name, label in TEST_ROWS.items():
            if name in test:
                lines.append(row(label, test[name]["stats"]["important_f1"], test[name]["stats"]))
        lines += ["", SMALL_TEST_CAUTION]
    lines += ["", "### Deployed model (`predict --study`)", "", deployed_sentence(rec)]
    lines += ["", "Paste into SKOL:", "", "```python", paste_snippet(rec), "```"]
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


def save_notes(study: optuna.Study, state: dict, recommendation: Recommendation, test: dict | None = None) -> None:
    """Study note with the decision; each confirmed trial's note says what the confirmation found."""
    save_live_note(study, study_note(recommendation, test))
    for name, cand in state["candidates"].items():
        if cand.get("trial") is None or name == THRESHOLDS or not cand["units"]:
            continue
        row = recommendation.row(name)
        found = ("the reference every candidate is paired against" if name == UNWEIGHTED or row is None else
                 f"mean important_f1 {fmt.score(row.mean)}, {fmt.diff(row.diff.mean)} {fmt.VS_NONE}, "
                 f"{fmt.diff_interval(row.diff, recommendation.level)}")
        chosen = "recommended" if recommendation.candidate == name else "not recommended"
        table = "\n".join([CONFIRMATION_MARK, "", f"This trial was confirmed as candidate **{name}** ({chosen}): "
                           f"{found}.", "", "Scores per unit (held-out folds):", "",
                           "| unit | important_f1 | Nomenclature F1 | Description F1 |", "|---|---|---|---|"]
                          + [f"| {k} | {u['scores']['important_f1']:.4f} | {u['scores']['Nomenclature_f1']:.4f} "
                             f"| {u['scores']['Description_f1']:.4f} |" for k, u in sorted(cand["units"].items())])
        append_to_finished_note(study, cand["trial"], CONFIRMATION_MARK, table)


def publish(study: optuna.Study, recommendation: Recommendation) -> None:
    """Store ``recommendation`` changed after the decision (the refits made) and refresh its views: the
    ``decision`` attr and the notes, with the test check where it was made."""
    store_recommendation(study, recommendation)
    study.set_user_attr("decision", decision_attr(recommendation))
    save_notes(study, study.user_attrs.get("confirmation") or {"candidates": {}}, recommendation,
               study.user_attrs.get("test_stats"))



def weights_markdown(trial) -> list[str]:
    """The trial's weights three ways: as given, as trained (normalised) and as the dashboard's ``w_`` parameters."""
    a = trial.user_attrs
    given, trained = a.get("class_weights"), a.get("class_weights_trained")
    rows = [f"**scheme**: `{' = '.join(a.get('schemes') or [a.get('scheme', 'search')])}`  "]
    rows.append("**class weights** (as given): " + (", ".join(f"{c} {given[c]:.4g}" for c in CLASSES)
                                                     if given else "none (unweighted)") + "  ")
    if trained:
        rows.append("**trained** (normalised, mean 1 over training lines): "
                    + ", ".join(f"{c} {trained[c]:.4g}" for c in CLASSES) + "  ")
    params = {k: v for k, v in trial.params.items() if k.startswith("w_")}
    if params:
        rows.append("**parameters** (ratios to Misc, as the dashboard shows them): "
                    + ", ".join(f"{k} {v:.4g}" for k, v in params.items()))
    elif a.get("outside_space"):
        rows.append("**parameters**: none; these weights lie outside the search space, so the trial is kept "
                    "off the contour and importance plots")
    return rows


def metrics_markdown(trial, stats: dict) -> str:
    """Weights and per-class validation metrics as Markdown (the dashboard note of a finished trial)."""
    rows = weights_markdown(trial) + ["", "| class | precision | recall | F1 | support | loss |",
                                      "|---|---|---|---|---|---|"]
    for c in CLASSES:
        rows.append(f"| {c} | {stats[f'{c}_precision']:.4f} | {stats[f'{c}_recall']:.4f} | {stats[f'{c}_f1']:.4f} "
                    f"| {stats[f'{c}_support']} | {stats[f'{c}_loss']:.4f} |")
    rows += ["", f"**important_f1** (validation): {stats['important_f1']:.4f}, accuracy {stats['accuracy']:.4f}"]
    return "\n".join(rows)


def stopped_markdown(trial, how: str, epochs_run: int, last: dict | None) -> str:
    """The note of a pruned or failed trial: why, after which epoch, and its last validation scores."""
    rows = weights_markdown(trial) + ["", f"**{how}** after epoch {epochs_run}."]
    if last:
        rows.append(f"Last validation scores: important_f1 {last['important_f1']:.4f}, "
                    + ", ".join(f"{c} F1 {last[f'{c}_f1']:.4f}" for c in CLASSES)
                    + " (scored on non-overlapping windows, as every epoch but the last is).")
    return "\n".join(rows)
