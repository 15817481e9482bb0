"""Unit runs through the storage: the confirmation's (candidate, unit) runs as trials of a companion study.

When the search has its trials, the first process to get there plans the confirmation: it picks the
candidates once, from the finished search (:func:`select_candidates`), and creates the
companion study ``<study>.confirm-<plan id>`` in the same storage with one enqueued trial per
(candidate, unit). Every process attached to the study (``tune`` and each ``worker``) then takes
waiting unit trials, one at a time, as Optuna hands them out: the confirmation spreads over the
workers exactly like the search, on the same engine. Heartbeats, stale-trial failing and retry, the
dashboard and ``trials_dataframe`` all work for unit runs as they do for trials.

A unit run's result depends only on its candidate's config and its unit (the unit's rows and seed
are fixed), so whichever process runs it gets the same scores. Each result records the host and
process that ran it and its seconds. The plan's id is a hash of the candidates' configs and the
units: processes that plan the same finished search meet in the same companion study, and a
search extended later gets a new plan (finished runs of unchanged candidates are carried over).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time

import optuna
from optuna.trial import TrialState

from ..config import ModelConfig
from ..folds import Unit, held_train_ratio, make_units
from ..retries import create_study, load_study
from ..schemes import THRESHOLDS, UNWEIGHTED, weights_key
from ..space import METRIC_NAME
from ..storage import describe, storage_of, trial_config, trial_score, unweighted_config, unweighted_number
from ..unitrun import UNIT_KEYS
from .racing import Race, race

logger = logging.getLogger(__name__)

COMPANION = ".confirm-"
ENQUEUE_GRACE_S = 60.0  # how long a process waits for the planner to finish enqueuing before it helps


def config_key(config: ModelConfig) -> dict:
    """A candidate's config without run-time settings, as the plan stores it: what its unit runs' results
    depend on."""
    return {k: v for k, v in config.as_dict().items() if k != "verbosity"}


def select_candidates(study: optuna.Study, top: int) -> dict[str, dict]:
    """The unweighted model, the ``top`` best distinct weight vectors and the threshold competitor.

    Weight vectors are compared by their trained (normalised) values, so schemes with the same
    ratios count once. Names are ``unweighted``, ``thresholds`` and ``trial N``.
    """
    complete = sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)),
                      key=lambda t: (-trial_score(t), t.number))
    base = unweighted_config(study)
    unweighted_trial = unweighted_number(study)
    out = {UNWEIGHTED: {"kind": "unweighted", "trial": unweighted_trial, "config": base, "class_weights": None},
           THRESHOLDS: {"kind": "thresholds", "trial": unweighted_trial, "config": base, "class_weights": None}}
    seen = {weights_key(None)}
    for t in complete:
        if len(out) - 2 >= top:
            break
        trained = t.user_attrs.get("class_weights_trained", t.user_attrs.get("class_weights"))
        key = weights_key(trained)
        if key in seen:
            continue
        seen.add(key)
        config = trial_config(study, t)
        out[f"trial {t.number}"] = {"kind": "weights", "trial": t.number, "config": config,
                                    "class_weights": trained, "scheme": t.user_attrs.get("scheme"),
                                    METRIC_NAME: trial_score(t)}
    return out


def make_plan(study: optuna.Study, evaluation: dict, racing: bool = True) -> dict:
    """The confirmation's plan from the finished search: candidates (with configs), units, and its id.

    ``racing`` (kept in the plan, not in its id) stops a candidate's runs once it cannot win (:mod:`.racing`);
    a plan made before racing existed has no such key and trains every run. ``deploy_every_unit`` (also
    outside the id) trains the unweighted candidate on every unit even when the race needs fewer, so that a
    no-weights decision deploys all its units' models; a plan made before it keeps the raced prefix."""
    candidates = select_candidates(study, evaluation["top"])
    units = make_units(evaluation["folds"], evaluation["repeats"], evaluation.get("first_repeat", 0))
    units_by = evaluation.get("units_by", "chunk")
    plan = {"folds": evaluation["folds"], "repeats": evaluation["repeats"], "units": [u.key for u in units],
            "units_by": units_by, "racing": racing, "deploy_every_unit": True,
            "candidates": {name: dict(cand, config=config_key(cand["config"])) for name, cand in candidates.items()}}
    # Folds of chunks hash as before units_by existed, so a resumed older study meets its own plan.
    blob = json.dumps({"units": plan["units"], "folds": plan["folds"],
                       **({} if units_by == "chunk" else {"units_by": units_by}),
                       "candidates": {n: c["config"] for n, c in plan["candidates"].items()}}, sort_keys=True)
    plan["id"] = hashlib.sha256(blob.encode()).hexdigest()[:8]
    return plan


def units_by(plan: dict) -> str:
    """What the plan's folds hold whole (a plan made before ``units_by`` existed: chunks)."""
    return plan.get("units_by", "chunk")


def runs_of(plan: dict) -> list[tuple[str, str]]:
    """Every (candidate, unit) pair that is trained: thresholds ride on the unweighted model's runs."""
    return [(name, key) for key in plan["units"] for name in plan["candidates"] if name != THRESHOLDS]


def companion_name(study_name: str, plan: dict) -> str:
    """The name of the companion study that holds a plan's unit runs."""
    return f"{study_name}{COMPANION}{plan['id']}"


def open_companion(study: optuna.Study, evaluation: dict, racing: bool = True) -> tuple[optuna.Study, dict]:
    """Create the companion study for the finished search, or join it; returns ``(companion, plan)``.

    Creation is atomic in the database: of several processes that reach the end of the search
    together, one creates the study, stores the plan and enqueues the runs; the others load it.
    """
    plan = make_plan(study, evaluation, racing)
    name = companion_name(study.study_name, plan)
    storage = storage_of(study)
    try:
        companion = create_study(name, storage, direction="maximize")
        _describe(companion, study.study_name, plan)
        _enqueue_missing(companion, plan, _earlier_results(study, name, storage))
        companion.set_user_attr("enqueued", True)
        logger.info(f"planned the confirmation: {len(runs_of(plan))} unit runs in study {name!r}")
    except optuna.exceptions.DuplicatedStudyError:
        companion = load_study(name, storage)
        deadline = time.monotonic() + ENQUEUE_GRACE_S
        while "enqueued" not in companion.user_attrs and time.monotonic() < deadline:
            time.sleep(1.0)
        if "enqueued" not in companion.user_attrs:  # the planner died while planning: finish its work
            plan = companion.user_attrs.get("plan", plan)  # its own, where it stored it (the same search gives the same)
            _describe(companion, study.study_name, plan)
            _enqueue_missing(companion, plan, {})
            companion.set_user_attr("enqueued", True)
        plan = companion.user_attrs["plan"]
    if study.user_attrs.get("confirmation_study") != name:
        study.set_user_attr("confirmation_study", name)
    return companion, plan


def _describe(companion: optuna.Study, study_name: str, plan: dict) -> None:
    """The companion's attributes, "about" first: what a reader who opens it is looking at."""
    describe(companion, "held_out_important_f1", {
        "about": f"The confirmation of study {study_name!r}: one trial per candidate and unit, trained on the unit's "
                 "training folds and scored on its held-out fold. Its 'Best Trial' is one such run, not a "
                 f"recommendation: the decision is in study {study_name!r}.",
        "plan": plan, "parent_study": study_name})


def _run_key(plan: dict, candidate: str, unit: str) -> tuple:
    """What makes two plans' runs the same run: the candidate's config and the unit, cut the same way (a unit
    key such as ``r0f0`` names other rows under other folds or ``units_by``)."""
    return (json.dumps(plan["candidates"][candidate]["config"], sort_keys=True), unit, plan["folds"], units_by(plan))


def _earlier_results(study: optuna.Study, name: str, storage) -> dict:
    """Finished unit runs of this study's earlier plans, by :func:`_run_key`: reused when a candidate's config
    and its units are unchanged (an extended search keeps the unweighted candidate, say)."""
    found = {}
    prefix = f"{study.study_name}{COMPANION}"
    for summary in optuna.study.get_all_study_summaries(storage, include_best_trial=False):
        if not summary.study_name.startswith(prefix) or summary.study_name == name:
            continue
        old = optuna.load_study(study_name=summary.study_name, storage=storage)
        plan = old.user_attrs.get("plan") or {}
        for t in old.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            if t.user_attrs.get("candidate") in plan.get("candidates", {}):
                key = _run_key(plan, t.user_attrs["candidate"], t.user_attrs["unit"])
                found.setdefault(key, (summary.study_name, t))
    return found


def run_params(plan: dict, candidate: str, unit: str) -> tuple[dict, dict]:
    """A unit run's candidate and unit as the trial's parameters, with their distributions: the dashboard shows
    them on each run (its Best Trial card, its parameter importance) instead of an empty list."""
    names = [n for n in plan["candidates"] if n != THRESHOLDS]
    return ({"candidate": candidate, "unit": unit},
            {"candidate": optuna.distributions.CategoricalDistribution(names),
             "unit": optuna.distributions.CategoricalDistribution(list(plan["units"]))})


def _enqueue_missing(companion: optuna.Study, plan: dict, earlier: dict) -> None:
    """One waiting trial for every run that has none yet (or a copy of an earlier finished run)."""
    present = {(t.user_attrs.get("candidate"), t.user_attrs.get("unit")) for t in companion.get_trials(
        deepcopy=False, states=(TrialState.COMPLETE, TrialState.WAITING, TrialState.RUNNING))}
    for name, key in runs_of(plan):
        if (name, key) in present:
            continue
        reuse = earlier.get(_run_key(plan, name, key))
        if reuse is not None:
            source, old = reuse
            attrs = dict(old.user_attrs, candidate=name, reused_from=f"{source}#{old.number}")
            params, distributions = run_params(plan, name, key)
            companion.add_trial(optuna.trial.create_trial(state=TrialState.COMPLETE, value=old.value, params=params,
                                                          distributions=distributions, user_attrs=attrs))
        else:
            companion.enqueue_trial(run_params(plan, name, key)[0], user_attrs={"candidate": name, "unit": key})


def plan_ratio(prepared, plan: dict) -> float:
    """The plan's held-out / training lines ratio (the interval's correction), from the fold sizes."""
    return held_train_ratio(prepared, [Unit.from_key(k) for k in plan["units"]], plan["folds"], units_by(plan))


def unit_scores(plan: dict, finished: dict) -> dict[str, dict[str, float]]:
    """``{candidate: {unit: important_f1}}`` of the finished runs (thresholds read from the unweighted runs)."""
    out: dict[str, dict[str, float]] = {}
    for name in plan["candidates"]:
        source, attr = (UNWEIGHTED, "thresholds") if name == THRESHOLDS else (name, "scores")
        out[name] = {key: float(finished[(source, key)].user_attrs[attr]["important_f1"])
                     for key in plan["units"] if (source, key) in finished}
    return out


def race_of(companion: optuna.Study, plan: dict, ratio: float) -> Race:
    """Which runs still count, from the runs finished so far; nothing is stopped in a plan without racing."""
    if not plan.get("racing"):
        return Race(tuple(plan["units"]), UNWEIGHTED)
    return race(plan["units"], unit_scores(plan, results(companion)), ratio, UNWEIGHTED,
                base_all=bool(plan.get("deploy_every_unit")))


def results(companion: optuna.Study, counted: Race | None = None,
            trials: list | None = None) -> dict[tuple[str, str], optuna.trial.FrozenTrial]:
    """The finished run of every (candidate, unit): the first to complete, so a retried run counts once.
    With ``counted`` (a :class:`.racing.Race`), only the runs it counts: a stopped candidate's runs past
    its stop, finished by a process that had started them before the stop, are left out. ``trials`` is a
    read of the companion's trials already made."""
    out: dict[tuple[str, str], optuna.trial.FrozenTrial] = {}
    complete = [t for t in (trials if trials is not None else companion.get_trials(deepcopy=False))
                if t.state == TrialState.COMPLETE]
    for t in sorted(complete, key=lambda t: t.number):
        pair = (t.user_attrs["candidate"], t.user_attrs["unit"])
        if counted is None or counted.needed(*pair):
            out.setdefault(pair, t)
    return out


def missing_runs(companion: optuna.Study, plan: dict, counted: Race | None = None) -> tuple[list, list]:
    """``(pending, lost)``: runs not finished yet but waiting or running somewhere, and runs with neither
    (failed for good, e.g. retried too often). Runs that ``counted`` no longer needs are neither."""
    # One read for both: with two, a run that completed between them was in neither, and so "lost".
    trials = companion.get_trials(deepcopy=False)
    finished = results(companion, trials=trials)
    alive = {(t.user_attrs.get("candidate"), t.user_attrs.get("unit")) for t in trials
             if t.state in (TrialState.WAITING, TrialState.RUNNING)}
    todo = [r for r in runs_of(plan) if r not in finished and (counted is None or counted.needed(*r))]
    return [r for r in todo if r in alive], [r for r in todo if r not in alive]


def state_of(plan: dict, finished: dict, counted: Race | None = None) -> dict:
    """The confirmation's state (candidates with their per-unit results) as the study's views read it.

    With ``counted``, a stopped candidate holds the units it ran before its stop and says after how many
    (``stopped_after``)."""
    candidates = {}
    for name, cand in plan["candidates"].items():
        source = UNWEIGHTED if name == THRESHOLDS else name
        units = {}
        for key in plan["units"]:
            t = finished.get((source, key))
            if t is None or (counted is not None and not counted.needed(name, key)):
                continue
            scores = t.user_attrs["thresholds"] if name == THRESHOLDS else t.user_attrs["scores"]
            units[key] = {"scores": {k: float(scores[k]) for k in UNIT_KEYS}, "lines": t.user_attrs["lines"],
                          "train_lines": t.user_attrs["train_lines"], "seconds": t.user_attrs["seconds"],
                          "host": t.user_attrs.get("host"), "pid": t.user_attrs.get("pid"), "run": t.number}
            if name == THRESHOLDS and "multipliers" in t.user_attrs:
                units[key]["multipliers"] = t.user_attrs["multipliers"]
        candidates[name] = dict(cand, units=units)
        if counted is not None and name in counted.stopped:
            candidates[name]["stopped_after"] = counted.stopped[name]
    return {"folds": plan["folds"], "repeats": plan["repeats"], "units": plan["units"], "units_by": units_by(plan),
            "candidates": candidates}
