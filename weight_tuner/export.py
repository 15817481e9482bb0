"""Export stage: the best weights of a study as JSON that pastes into a SKOL model_config."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from optuna.trial import TrialState

from .features import atomic_write_bytes
from .study import METRIC_NAME, StudyError, load_existing_study, trial_config


def build_export(storage_url: str, study_name: str) -> dict:
    """The export payload of a study's best trial; an error if no trial has completed."""
    study = load_existing_study(storage_url, study_name)
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        raise StudyError(f"study {study_name!r} has no completed trial yet ({len(study.trials)} trials in all); "
                         "run `weight-tuner tune` first")
    best = max(complete, key=lambda t: t.value)
    attrs = study.user_attrs
    config = trial_config(study, best)
    val_stats = {k[len("val_"):]: v for k, v in best.user_attrs.items() if k.startswith("val_")}
    baselines = {}
    for t in study.trials:
        scheme = t.user_attrs.get("scheme")
        if scheme and scheme != "search":
            baselines[scheme] = {"trial": t.number, "state": t.state.name, "class_weights": t.user_attrs.get("class_weights"),
                                 METRIC_NAME: t.value if t.state == TrialState.COMPLETE else None}
    test = attrs.get("test_stats")
    return {
        "class_weights": config["class_weights"],
        "model_config": config,
        "study": study_name,
        "storage": storage_url,
        "trial_number": best.number,
        "scheme": best.user_attrs.get("scheme"),
        "objective": METRIC_NAME,
        "val_stats": val_stats,
        "test_stats": test["stats"] if test and test.get("trial") == best.number else None,
        "verdict": test.get("verdict") if test and test.get("trial") == best.number else None,
        "data_fingerprint": attrs.get("data_fingerprint"),
        "source": attrs.get("source"),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "baselines": baselines,
    }


def export_study(storage_url: str, study_name: str, out: str | Path) -> dict:
    """Write the export atomically: a reader never sees a partial file, and a failure leaves the old one."""
    payload = build_export(storage_url, study_name)
    atomic_write_bytes(Path(out), (json.dumps(payload, indent=2) + "\n").encode())
    return payload
