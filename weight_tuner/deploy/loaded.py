"""What ``predict --study`` loads: the deployed model of a study's recommendation."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from ..artifacts import fetch_members, members_dir
from ..errors import StudyError
from ..paths import model_path, models_dir
from ..posthoc import Calibration
from ..sample import SAMPLE_SOURCE
from ..storage import completed_trials, stored_recommendation, trial_score, tuned_study
from .ensemble import class_fractions, mean_fractions, stored_calibration
from .refits import REFIT_NAME, refit_paths


@dataclass(frozen=True)
class LoadedModel:
    """The model ``predict --study`` uses: its kind, bundle paths (several for an ensemble or refits), the
    post-hoc multipliers (``None``: plain argmax), the class balance it was trained on (for prior
    adaptation) and the calibration applied to each model's probabilities (``None``: none)."""

    kind: str
    bundles: list[Path]
    multipliers: dict | None
    train_prior: dict[str, float] | None
    description: str
    calibration: Calibration | None = None


def recommended_model(storage_url: str, study_name: str, use: str | None = None,
                      members: str | Path | None = None) -> LoadedModel:
    """The deployed model of a study's recommendation: ``use`` (``ensemble``, ``refit`` or ``single``), by
    default the recommendation's own default (:data:`..confirm.deployed.DEFAULT_DEPLOYED`).

    The ensemble is the recommended candidate's confirmation models (unpacked once into the study's
    models folder from ``members``, by default the study's own members folder: never a folder another machine
    recorded); ``refit`` is ``tune --refits``' models;
    ``single`` is the search's model of the recommended trial (the unweighted one for no weights and
    thresholds). Each carries the recommendation's calibration, where it has one. A study without a
    recommendation falls back to its best trial's model; a recommendation never does. Anything missing is a
    :class:`StudyError`.
    """
    study = tuned_study(storage_url, study_name)
    loaded = _recommended(study, storage_url, study_name, use, members)
    if str(study.user_attrs.get("source", "")).startswith(SAMPLE_SOURCE):  # issue 45, 12: say so where it is used
        loaded = dataclasses.replace(loaded, description=f"{loaded.description}; trained on the generated sample "
                                     "corpus (synthetic text, a demonstration): tune --data on your own annotated "
                                     "files before labelling real text")
    return loaded


def _recommended(study, storage_url: str, study_name: str, use: str | None, members) -> LoadedModel:
    rec = stored_recommendation(study)
    multipliers = rec.multipliers if rec and rec.decision == "thresholds" else None
    deployed = rec.deployed if rec else None
    kind = use or (deployed.default if deployed else "single")
    models = models_dir(storage_url, study_name)
    if kind != "single" and deployed is None:
        raise StudyError(f"study {study_name!r} has no deployed {kind} (its confirmation has not run, or ran "
                         "before models were kept); use --use single")
    calibration = stored_calibration(deployed)
    note = f"; calibrated (temperature {calibration.temperature:.3f})" if calibration else ""
    if kind == "ensemble":
        found = deployed.members
        if not found:
            raise StudyError(f"study {study_name!r} kept no ensemble members (confirmed before models were kept); "
                             "use --use single")
        bundles = fetch_members(found, models / "members", members_dir(storage_url, study_name, members))
        prior = mean_fractions([m["train_class_counts"] for m in found if m.get("train_class_counts")] or
                               [study.user_attrs["class_counts"]["train"]])
        return LoadedModel("ensemble", bundles, multipliers, prior,
                           f"ensemble of {len(bundles)} confirmation models of {deployed.candidate} "
                           f"(units {', '.join(m['unit'] for m in found)}){note}", calibration)
    if kind == "refit":
        refit = deployed.refit
        paths = refit_paths(models, refit.get("models", 1)) if refit else [models / REFIT_NAME]
        missing = [p for p in paths if not p.exists()]
        if refit is None or missing:
            raise StudyError(f"study {study_name!r} has no refit model at {(missing or paths)[0]}; run tune again "
                             "with --refits N")
        return LoadedModel("refit", paths, multipliers, class_fractions(refit["train_class_counts"]),
                           f"{len(paths)} refit{'s' if len(paths) > 1 else ''} of {deployed.candidate} on "
                           f"{refit['train_lines']} non-test lines{note}", calibration)
    if rec and rec.trial is None:
        raise StudyError(f"study {study_name!r} decided {rec.decision.replace('_', ' ')} but its search has no "
                         "unweighted trial (its schemes left it out), so there is no single model of it; use "
                         "--use ensemble or refit")
    number = rec.trial if rec else max(completed_trials(study), key=trial_score).number
    path = model_path(models, number)
    if not path.exists():
        raise StudyError(f"the model of trial {number} is not at {path} (models are kept on the machine that ran "
                         "the study); use weight-tuner train --save-model with the exported weights")
    return LoadedModel("single", [path], multipliers, class_fractions(study.user_attrs["class_counts"]["train"]),
                       f"the search's model of trial {number}{note}", calibration)
