"""Recommendation stage: confirm the search's top candidates against no weights, paired, and decide.

After the search, the best few distinct weight vectors, the unweighted model and the post-hoc
threshold competitor (on the unweighted model) are scored on the same (repeat, fold) units
(:mod:`..folds`). For each candidate the paired difference to the unweighted model gets a
confidence interval; weights are recommended only when the interval's lower bound is above 0.
Per-unit results are saved in the study after every unit, so an interrupted confirmation
resumes without redoing finished units. The test split decides nothing: it is scored once,
after the decision (:mod:`..deploy.testcheck`).
"""

from __future__ import annotations

import logging
import math
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import optuna

from ..budget import Budget, minutes, time_left
from ..budget import spent as budget_spent
from ..config import CLASSES
from ..folds import Unit
from ..notes import PENDING_DECISION, decision_attr, save_notes
from ..records import Candidate, Difference, Recommendation
from ..schemes import UNWEIGHTED
from ..space import stored_evaluation
from ..storage import FINISHED, store_recommendation, stored_recommendation
from .deployed import deployed_models, kept_refits
from .plan import missing_runs, open_companion, plan_ratio, race_of, results, runs_of, state_of
from .runs import take_runs, wait_for_runs
from .statistics import decide, detectable, mean_or_nan

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- confirmation

def confirm(study: optuna.Study, prepared, evaluation: dict, *, after_unit=None, stop=None,
            wait: bool = True, members: Path | None = None, racing: bool = True) -> Recommendation | None:
    """Take the confirmation's unit runs (through the storage, with every other process of the study),
    then decide.

    ``evaluation`` holds ``folds``, ``repeats``, ``top`` and ``first_repeat``. The runs are trials of a
    companion study (:mod:`.plan`), planned once from the finished search; finished runs are never
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
        left, _ = missing_runs(companion, plan, counted)
        seconds = time_left(study, evaluation, len(study.get_trials(deepcopy=False, states=FINISHED)), len(left))
        if seconds is not None and wait:
            logger.info(f"confirmation: {len(left)} unit runs left; whole tune: {minutes(seconds)} left")
        if after_unit is not None:
            after_unit(trial.user_attrs["candidate"], Unit.from_key(trial.user_attrs["unit"]))

    def may_start() -> bool:
        return not budget_spent(study)

    with stop.safe_points() if stop is not None else nullcontext():
        if not wait:
            take_runs(companion, plan, prepared, stop, after_run, members, may_start)
            return None
        counted = wait_for_runs(companion, plan, prepared, stop=stop, after_run=after_run, members=members,
                                may_start=may_start)
    finished = results(companion, counted)
    state = state_of(plan, finished, counted)
    study.set_user_attr("confirmation", state)
    if not state["candidates"][UNWEIGHTED]["units"]:  # only a spent time budget ends a confirmation this early
        logger.warning("no decision: the time budget ended before a unit run of no weights finished; run the same "
                       "command again to go on")
        return None
    recommendation = recommendation_from(state, evaluation)
    recommendation = recommendation.replace(
        finished_trials=len(study.get_trials(deepcopy=False, states=FINISHED)), confirmation_study=companion.study_name,
        time_limited=time_limited(study, companion, plan, counted),
        deployed=kept_refits(deployed_models(study, companion, finished, recommendation), stored_recommendation(study)))
    store_recommendation(study, recommendation)
    study.set_user_attr("decision", decision_attr(recommendation))
    save_notes(study, state, recommendation)
    return recommendation


def time_limited(study: optuna.Study, companion: optuna.Study, plan: dict, counted) -> dict | None:
    """What a spent time budget cut short, for the views: ``None`` where the search ran every trial asked for and
    the confirmation every run it needed (or there is no budget)."""
    budget = Budget.of(study)
    if budget is None:
        return None
    total = len(runs_of(plan))
    pending, lost = missing_runs(companion, plan, counted)
    done = total - len(pending) - len(lost)
    trials = len(study.get_trials(deepcopy=False, states=FINISHED))
    if done == total and (budget.trials is None or trials >= budget.trials):
        return None
    return {"timeout": budget.timeout, "trials": trials, "trials_asked": budget.trials, "runs_done": done,
            "runs_planned": total}


def withdraw_stale_recommendation(study: optuna.Study) -> bool:
    """Withdraw a recommendation made before trials that have finished since (it no longer covers the
    search); return whether one was withdrawn. ``tune --no-confirm`` calls this after adding trials."""
    rec = stored_recommendation(study)
    if not rec or rec.finished_trials == len(study.get_trials(deepcopy=False, states=FINISHED)):
        return False
    store_recommendation(study, None)
    study.set_user_attr("decision", PENDING_DECISION)
    return True


def confirmation_evaluation(study: optuna.Study, default: dict) -> dict:
    """The evaluation settings the confirmation uses: the study's own (``default`` for a study without).

    The cv design scored its trials on the first repeats, so its confirmation takes fresh partitions
    and seeds (``first_repeat`` = ``repeats``), not the units that chose the winner.
    """
    evaluation = dict(stored_evaluation(study.user_attrs.get("evaluation")) or default)
    if evaluation["design"] == "cv":
        evaluation["first_repeat"] = evaluation["repeats"]
    return evaluation


def recommendation_from(state: dict, evaluation: dict) -> Recommendation:
    """The decision over the units of a confirmation state, with everything export needs (without the
    deployed models and the search's size, which :func:`confirm` adds)."""
    cands = state["candidates"]
    # Every candidate's units are a prefix of the unweighted one's (all of them, without racing).
    lines = [(u["lines"], u["train_lines"]) for u in cands[UNWEIGHTED]["units"].values()]
    ratio = float(np.mean([a for a, _ in lines]) / np.mean([b for _, b in lines])) if lines else 1.0
    scores = {n: {"kind": c["kind"], "scores": {k: u["scores"]["important_f1"] for k, u in c["units"].items()}}
              for n, c in cands.items()}
    result = decide(scores, ratio)
    rows = []
    for row in result["candidates"]:
        c = cands[row["candidate"]]
        rows.append(Candidate(row["candidate"], row["kind"], row["mean"], Difference.from_dict(row["diff"]),
                              trial=c.get("trial"), class_weights=c.get("class_weights"), scheme=c.get("scheme"),
                              stopped_after=c.get("stopped_after"),
                              per_class={k: mean_or_nan(u["scores"][k] for u in c["units"].values())
                                         for k in ("Nomenclature_f1", "Description_f1")}))
    pick, decision = cands[result["candidate"]], result["decision"]
    return Recommendation(
        decision=decision, candidate=result["candidate"], level=result["level"],
        diff_vs_unweighted=Difference.from_dict(result["diff_vs_unweighted"]), interval=result["interval"],
        candidates=tuple(rows),
        class_weights=pick["class_weights"] if decision == "weights" else None,
        trial=pick.get("trial") if decision == "weights" else cands[UNWEIGHTED].get("trial"),
        n_units=result["diff_vs_unweighted"]["n_units"], folds=state["folds"], repeats=state["repeats"],
        units_by=state.get("units_by", "chunk"),
        design=evaluation.get("design", "confirm"), test_train_ratio=ratio,
        detectable=detectable(scores, ratio, state["folds"], state["repeats"]),
        multipliers=unit_multipliers(pick["units"]) if decision == "thresholds" else None)


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


