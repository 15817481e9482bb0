"""The models a decision deploys: the recommended candidate's confirmation models (its members) and their
averaged calibration, named in the recommendation for ``predict --study``."""

from __future__ import annotations

import optuna

from ..artifacts import MEMBER_ATTR
from ..posthoc import Calibration, mean_calibration
from ..records import Deployed, Recommendation
from ..schemes import UNWEIGHTED

DEPLOYED_KINDS = ("ensemble", "refit", "single")

DEFAULT_DEPLOYED = "ensemble"  # until refits are made; then "refit"


def ensemble_of(companion: optuna.Study, finished: dict, candidate: str) -> list[dict]:
    """The members of ``candidate``: one per unit of the plan, each with its unit, artifact and training size.

    ``finished`` is :func:`.plan.results` of the companion study; a unit run without a kept
    model (saved before models were kept) is left out, and an ensemble with none is empty.
    """
    plan = companion.user_attrs["plan"]
    members = []
    for key in plan["units"]:
        t = finished.get((candidate, key))
        if t is None or MEMBER_ATTR not in t.user_attrs:
            continue
        members.append(dict(t.user_attrs[MEMBER_ATTR], unit=key, run=t.number, train_lines=t.user_attrs["train_lines"],
                            train_class_counts=t.user_attrs.get("train_class_counts"),
                            calibration=t.user_attrs.get("calibration")))
    return members


def deployed_calibration(members: list[dict], decision: str) -> dict | None:
    """The deployed models' calibration: the members' fits (each on its own held-out fold) averaged,
    with what it was fitted on. ``None`` for a thresholds decision (its multipliers were fitted on
    uncalibrated probabilities) or when a member has no fit (a unit run from before calibration, or a
    held-out fold without every class)."""
    fits = [m.get("calibration") for m in members]
    if decision == "thresholds" or not fits or None in fits:
        return None
    mean = mean_calibration([Calibration.from_dict(f) for f in fits])
    return dict(mean.as_dict(), fitted_on=f"the held-out folds of {len(fits)} confirmation units, one fit each, "
                                          "parameters averaged")


def deployed_models(study: optuna.Study, companion: optuna.Study, finished: dict,
                    recommendation: Recommendation) -> Deployed:
    """What ``predict --study`` can use for the recommended configuration: the confirmation's models of
    its candidate (the ensemble), the search's model of its trial (single) and, once made, a refit."""
    candidate = recommendation.candidate if recommendation.decision == "weights" else UNWEIGHTED
    counts = study.user_attrs.get("class_counts", {})
    members = ensemble_of(companion, finished, candidate)
    return Deployed(DEFAULT_DEPLOYED if members else "single", candidate,
                    deployed_calibration(members, recommendation.decision), tuple(members),
                    single={"trial": recommendation.trial, "train_class_counts": counts.get("train"),
                            "trained_on": "the search's training split"})


def kept_refits(deployed: Deployed, earlier: Recommendation | None) -> Deployed:
    """``deployed`` with the earlier recommendation's refits, where they are of the same candidate with the
    same calibration: a rerun that stops before its refit step (an error, Ctrl-C) leaves ``predict --study``
    on the refits it used, and the refit step then checks and keeps them."""
    before = earlier.deployed if earlier else None
    if before and before.refit and (before.candidate, before.calibration) == (deployed.candidate, deployed.calibration):
        return deployed.with_refit(before.refit)
    return deployed
