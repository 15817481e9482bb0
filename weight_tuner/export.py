"""Export stage: the best weights of a study as JSON that pastes into a SKOL model_config."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from optuna.trial import TrialState

from .features import atomic_write_bytes
from .study import METRIC_NAME, StudyError, completed_trials, load_existing_study, trial_config, trial_score


def build_export(storage_url: str, study_name: str, trial_number: int | None = None) -> dict:
    """The export payload of a study's best trial (or of ``trial_number``); an error if none has completed.

    In multi-objective mode the default is the point of the Pareto front with the best
    validation important_f1 (the trial with the best mean of two F1s is always on that front).
    """
    study = load_existing_study(storage_url, study_name)
    complete = completed_trials(study)
    if trial_number is None:
        best = max(complete, key=trial_score)
    else:
        chosen = [t for t in complete if t.number == trial_number]
        if not chosen:
            raise StudyError(f"study {study_name!r} has no completed trial number {trial_number}; completed: "
                             f"{', '.join(str(t.number) for t in complete)}")
        best = chosen[0]
    attrs = study.user_attrs
    config = trial_config(study, best)
    val_stats = {k[len("val_"):]: v for k, v in best.user_attrs.items() if k.startswith("val_")}
    baselines: dict = {}
    for t in study.trials:
        scheme = t.user_attrs.get("scheme")
        # A scheme retried after a fault has several trials: the completed one speaks for it.
        if scheme and scheme != "search" and baselines.get(scheme, {}).get("state") != "COMPLETE":
            baselines[scheme] = {"trial": t.number, "state": t.state.name, "class_weights": t.user_attrs.get("class_weights"),
                                 METRIC_NAME: trial_score(t) if t.state == TrialState.COMPLETE else None}
    test = attrs.get("test_stats")
    return {
        "class_weights": config["class_weights"],
        "model_config": config,
        "study": study_name,
        "storage": storage_url,
        "trial_number": best.number,
        "scheme": best.user_attrs.get("scheme"),
        "objectives": attrs.get("objectives", ["important_f1"]),
        "pareto_front": [t.number for t in study.best_trials] if len(study.directions) > 1 else None,
        "val_stats": val_stats,
        "test_stats": test["stats"] if test and test.get("trial") == best.number else None,
        "verdict": test.get("verdict") if test and test.get("trial") == best.number else None,
        "data_fingerprint": attrs.get("data_fingerprint"),
        "source": attrs.get("source"),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "baselines": baselines,
    }


def export_study(storage_url: str, study_name: str, out: str | Path, trial_number: int | None = None) -> dict:
    """Write the export atomically: a reader never sees a partial file, and a failure leaves the old one."""
    payload = build_export(storage_url, study_name, trial_number)
    atomic_write_bytes(Path(out), (json.dumps(payload, indent=2) + "\n").encode())
    return payload
