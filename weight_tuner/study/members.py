"""The deployed model: the confirmation's models of the recommended configuration, kept and averaged.

Every unit run of the confirmation trains its candidate on the unit's training folds. Those models
are kept as Optuna artifacts of their unit trials (one zipped bundle each, in a
``FileSystemArtifactStore``), so a worker on another machine keeps its models where ``tune`` and
``predict`` find them when the store's folder is shared. After the decision the recommended
candidate's members form a cross-validation ensemble. ``tune`` then refits the configuration on every
non-test line with a few seeds (``--refits``): those models, averaged, are what ``predict --study``
uses by default (docs/benchmarks.md, "The model a user deploys"). Each member's calibration, fitted on
its held-out fold, is averaged into the deployed models' calibration, applied to every model's
probabilities before they are averaged.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna
from optuna.artifacts import FileSystemArtifactStore, download_artifact, upload_artifact

from ..config import validate_config
from ..errors import DataError, IntegrityError, StudyError
from ..paths import artifacts_dir, atomic_write_bytes, check_bundle, file_digest, model_path, models_dir
from ..posthoc import Calibration, apply_calibration, apply_multipliers, mean_calibration
from .storage import completed_trials, stored_recommendation, trial_config, trial_score, tuned_study

logger = logging.getLogger(__name__)

MEMBER_ATTR = "member"  # a unit trial's user attr: {"artifact_id", "store"}
BUNDLE_NAME = "member.keras"
DEPLOYED_KINDS = ("ensemble", "refit", "single")
DEFAULT_DEPLOYED = "ensemble"  # until refits are made; then "refit"
DEFAULT_REFITS = 3
REFIT_SEED_STEP = 10  # refit k trains with seed + 10 k
REFIT_NAME = "refit.keras"  # the first refit, in the study's models folder; refit k > 0 is refit-<k>.keras


def members_dir(storage_url: str, study_name: str, override: str | Path | None = None) -> Path:
    """The artifact store's folder for a study's member models: ``override``, else beside its other files."""
    return Path(override) if override else artifacts_dir(storage_url, study_name) / "members"


def _store(folder: Path) -> FileSystemArtifactStore:
    """The study's artifact store in ``folder`` (created on first use)."""
    folder.mkdir(parents=True, exist_ok=True)
    return FileSystemArtifactStore(str(folder))


def _split_bytes(split: dict[str, list[str]]) -> bytes:
    return json.dumps(split, indent=1).encode()


def save_split(study: optuna.Study, split: dict[str, list[str]], folder: Path) -> dict:
    """Keep the split's chunk lists as an artifact of the study (``split.json``); return the short
    summary stored as the ``split`` user attr (chunks per split, the artifact's id, its size and SHA-256),
    so that the dashboard's first page is not a file list."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "split.json"
        path.write_bytes(_split_bytes(split))
        digest = file_digest(path)
        artifact_id = upload_artifact(artifact_store=_store(folder), file_path=str(path), study_or_trial=study)
    return {**{name: f"{len(ids)} chunks" for name, ids in split.items()}, "chunk_lists": f"artifact {artifact_id} "
            f"(split.json in {folder})", "artifact_id": artifact_id, **digest}


def check_split(study: optuna.Study, split: dict[str, list[str]], folder: Path) -> None:
    """A :class:`StudyError` unless ``split`` (this run's) is the study's stored split; a stored ``split.json``
    that is missing or corrupt is written again from it (the two are then known to be equal)."""
    stored = study.user_attrs.get("split") or {}
    if "sha256" not in stored:
        return  # a study made before splits carried a digest
    data = _split_bytes(split)
    if {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()} != {k: stored[k] for k in ("bytes", "sha256")}:
        raise StudyError(f"study {study.study_name!r} was split differently ({stored.get('chunk_lists')}); this run's "
                         "split differs (another --split-by, seed or corpus). Use a new --study name.")
    path = folder / stored["artifact_id"]
    if not path.is_file() or file_digest(path) != {k: stored[k] for k in ("bytes", "sha256")}:
        logger.warning(f"the study's split.json ({path}) is missing or corrupt; written again from this run's split, "
                       "which matches its recorded SHA-256")
        atomic_write_bytes(path, data)


def save_member(trial: optuna.Trial, model, featurizer, config: dict, label_map: dict, folder: Path) -> str:
    """Upload ``model`` as one zipped bundle, an artifact of the unit ``trial``; return the artifact id."""
    from ..train import save_bundle

    store = _store(folder)
    with tempfile.TemporaryDirectory() as tmp:
        save_bundle(model, featurizer, config, Path(tmp) / BUNDLE_NAME, label_map)
        packed = Path(tmp) / "member.zip"
        with zipfile.ZipFile(packed, "w", zipfile.ZIP_DEFLATED) as zf:
            for f in sorted(Path(tmp).iterdir()):
                if f != packed:
                    zf.write(f, f.name)
        digest = file_digest(packed)
        artifact_id = upload_artifact(artifact_store=store, file_path=str(packed), study_or_trial=trial)
    trial.set_user_attr(MEMBER_ATTR, {"artifact_id": artifact_id, "store": str(folder.resolve()), **digest})
    return artifact_id


def fetch_member(member: dict, cache: Path, store_override: str | Path | None = None) -> Path:
    """The local bundle path of a member (downloaded and unpacked into ``cache`` once).

    An unpacked copy that fails its manifest is unpacked again from the artifact. The artifact is checked
    against the size and SHA-256 recorded when it was uploaded: a corrupt one is an :class:`IntegrityError`,
    one that cannot be found a :class:`StudyError`, each naming it.
    """
    target = cache / member["artifact_id"]
    bundle = target / BUNDLE_NAME
    if bundle.exists():
        try:
            check_bundle(bundle)
            return bundle
        except DataError as exc:
            logger.warning(f"{exc}; unpacking member {member['artifact_id']} again from its artifact")
    folder = Path(store_override) if store_override else Path(member["store"])
    where = f"member model {member['artifact_id']} of unit {member.get('unit', '?')}"
    if not (folder / member["artifact_id"]).exists():
        raise StudyError(f"{where} is not in {folder} (the members' folder must be reachable here; pass --members DIR)")
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache, prefix=f".{member['artifact_id']}.") as tmp:
        packed = Path(tmp) / "member.zip"
        download_artifact(artifact_store=FileSystemArtifactStore(str(folder)), artifact_id=member["artifact_id"],
                          file_path=str(packed))
        if "sha256" in member and file_digest(packed) != {"bytes": member["bytes"], "sha256": member["sha256"]}:
            raise IntegrityError(f"{where}: the artifact {folder / member['artifact_id']} is corrupt (its size or "
                                 "SHA-256 differs from the one recorded when it was saved)")
        unpacked = Path(tmp) / "bundle"
        try:
            with zipfile.ZipFile(packed) as zf:
                zf.extractall(unpacked)
            check_bundle(unpacked / BUNDLE_NAME)
        except (zipfile.BadZipFile, IntegrityError) as exc:  # other DataErrors (an old pickled bundle) say it all
            raise IntegrityError(f"{where}: the artifact {folder / member['artifact_id']} is corrupt ({exc})") from exc
        try:
            os.rename(unpacked, target)
        except OSError:  # a folder is there: another process's copy, just unpacked, or the damaged one
            try:
                check_bundle(bundle)
                return bundle
            except DataError:
                aside = Path(tmp) / "damaged"
                os.rename(target, aside)  # moved, not deleted in place: no reader sees it half removed
                os.rename(unpacked, target)
    check_bundle(bundle)
    return bundle


def fetch_members(members: list[dict], cache: Path, store_override: str | Path | None = None) -> list[Path]:
    """The local bundle paths of an ensemble's members (:func:`fetch_member` for each)."""
    return [fetch_member(m, cache, store_override) for m in members]


def ensemble_of(companion: optuna.Study, finished: dict, candidate: str) -> list[dict]:
    """The members of ``candidate``: one per unit of the plan, each with its unit, artifact and training size.

    ``finished`` is :func:`.unitruns.results` of the companion study; a unit run without a kept
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


def stored_calibration(deployed: dict | None) -> Calibration | None:
    """The calibration a recommendation's ``deployed`` entry holds (``None``: none, or no entry)."""
    stored = (deployed or {}).get("calibration")
    return Calibration.from_dict(stored) if stored else None


def class_fractions(counts: dict[str, int]) -> dict[str, float]:
    """Class counts as fractions (a training split's class balance)."""
    total = sum(counts.values())
    return {c: counts[c] / total for c in counts}


def mean_fractions(all_counts: list[dict[str, int]]) -> dict[str, float]:
    """The mean class balance over several training sets (an ensemble's members)."""
    fractions = [class_fractions(c) for c in all_counts]
    return {c: sum(f[c] for f in fractions) / len(fractions) for c in fractions[0]}


def ensemble_probs(bundles: list[Path], split, multipliers: dict | None = None,
                   calibration: Calibration | None = None) -> np.ndarray:
    """The mean of the bundles' per-line probabilities on ``split``, each calibrated first (with
    ``calibration``), the mean re-weighted by ``multipliers``."""
    from ..train import load_bundle, predict_probs

    probs = []
    for path in bundles:
        model, _, cfg = load_bundle(path)
        probs.append(apply_calibration(predict_probs(model, split, cfg), calibration))
    return apply_multipliers(np.mean(probs, axis=0), multipliers)


def refit_paths(models: Path, count: int) -> list[Path]:
    """Where a study's ``count`` refits are saved."""
    return [models / (REFIT_NAME if k == 0 else f"refit-{k}.keras") for k in range(count)]


def recommended_config(study: optuna.Study, recommendation: dict) -> dict:
    """The model config of the recommendation: the weights trial's, else the unweighted one."""
    if recommendation["decision"] == "weights":
        trial = next(t for t in study.get_trials(deepcopy=False) if t.number == recommendation["trial"])
        return trial_config(study, trial)
    return validate_config(dict(study.user_attrs["model_config"], class_weights=None))


def refit(study: optuna.Study, prepared, storage_url: str, count: int = DEFAULT_REFITS,
          earlier: dict | None = None) -> dict:
    """Train the recommended configuration ``count`` times on every non-test line (seeds ``seed``,
    ``seed + 10``, ...), save the models beside the study's, make them the default of ``predict --study``,
    and score their calibrated mean once on the test split (deciding nothing). Returns the
    ``deployed.refit`` entry.

    ``earlier`` is the study's recommendation before this run of ``tune``: refits it made of the same
    configuration, as many, all on disk and scored with the same calibration, are kept instead of
    trained again (a rerun of a finished study trains nothing)."""
    rec = stored_recommendation(study)
    if rec is None or "deployed" not in rec:
        raise StudyError(f"study {study.study_name!r} has no recommendation to refit; run tune without --no-confirm")
    paths = refit_paths(models_dir(storage_url, study.study_name), count)
    paths[0].parent.mkdir(parents=True, exist_ok=True)
    # Processes of one study that reach the refits together: one trains, the others then find its models.
    with open(paths[0].parent / ".refit.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _refit(study, prepared, rec, paths, earlier)


def _refit(study: optuna.Study, prepared, rec: dict, paths: list[Path], earlier: dict | None) -> dict:
    from ..metrics import compute_stats
    from ..train import predict_probs, save_bundle, train_model
    from .notes import publish  # notes -> unitruns -> members at import time
    from .units import refit_data

    count = len(paths)
    config = recommended_config(study, rec)
    calibration = stored_calibration(rec["deployed"])
    for before in ((stored_recommendation(study) or {}).get("deployed") or {}, (earlier or {}).get("deployed") or {}):
        made = before.get("refit")
        if (made and made.get("models") == count and made.get("config") == config
                and before.get("calibration") == rec["deployed"].get("calibration")  # the same models, scored alike
                and _intact(paths)):
            logger.info(f"the {count} refits of this configuration are already in {paths[0].parent}: kept")
            publish(study, dict(rec, deployed=dict(rec["deployed"], refit=made, default="refit")))
            return made
    t0 = time.perf_counter()
    data = refit_data(prepared)
    test = prepared.splits["test"]
    probs = []
    for k, path in enumerate(paths):
        logger.info(f"refit {k + 1}/{count}: {rec['deployed']['candidate']} on {data.train.n} non-test lines")
        cfg = validate_config(dict(config, seed=int(config["seed"]) + REFIT_SEED_STEP * k))
        model, _ = train_model(data, cfg)
        save_bundle(model, prepared.featurizer, cfg, path, prepared.label_map)
        probs.append(apply_calibration(predict_probs(model, test, cfg), calibration))
    mean = apply_multipliers(np.mean(probs, axis=0), rec.get("multipliers"))
    entry = {"models": count, "config": config, "train_lines": int(data.train.n),
             "train_class_counts": data.train.class_counts(),
             "trained_on": f"every non-test line (train and validation splits), {count} seeds",
             "test_important_f1": float(compute_stats(test.y, mean)["important_f1"])}
    publish(study, dict(rec, deployed=dict(rec["deployed"], refit=entry, default="refit")))
    logger.info(f"{count} refit models saved in {paths[0].parent} ({time.perf_counter() - t0:.0f}s); test "
                f"important_f1 of their mean {entry['test_important_f1']:.4f} (scored once)")
    return entry


def _intact(paths: list[Path]) -> bool:
    """Whether every refit bundle is on disk and matches its manifest (a damaged one is named and retrained)."""
    for path in paths:
        try:
            check_bundle(path)
        except DataError as exc:
            if path.exists():
                logger.warning(f"{exc}; the refits are trained again")
            return False
    return True


@dataclass(frozen=True)
class Deployed:
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
                      members: str | Path | None = None) -> Deployed:
    """The deployed model of a study's recommendation: ``use`` (``ensemble``, ``refit`` or ``single``), by
    default the recommendation's own default (:data:`.members.DEFAULT_DEPLOYED`).

    The ensemble is the recommended candidate's confirmation models (unpacked once into the study's
    models folder; ``members`` overrides where their store is); ``refit`` is ``tune --refits``' models;
    ``single`` is the search's model of the recommended trial (the unweighted one for no weights and
    thresholds). Each carries the recommendation's calibration, where it has one. A study without a
    recommendation falls back to its best trial's model. Anything missing is a :class:`StudyError`.
    """
    study = tuned_study(storage_url, study_name)
    rec = stored_recommendation(study)
    multipliers = rec.get("multipliers") if rec and rec["decision"] == "thresholds" else None
    deployed = (rec or {}).get("deployed")
    kind = use or (deployed["default"] if deployed else "single")
    models = models_dir(storage_url, study_name)
    if kind != "single" and deployed is None:
        raise StudyError(f"study {study_name!r} has no deployed {kind} (its confirmation has not run, or ran "
                         "before models were kept); use --use single")
    calibration = stored_calibration(deployed)
    note = f"; calibrated (temperature {calibration.temperature:.2f})" if calibration else ""
    if kind == "ensemble":
        found = deployed["ensemble"]["members"]
        if not found:
            raise StudyError(f"study {study_name!r} kept no ensemble members (confirmed before models were kept); "
                             "use --use single")
        bundles = fetch_members(found, models / "members", members)
        prior = mean_fractions([m["train_class_counts"] for m in found if m.get("train_class_counts")] or
                               [study.user_attrs["class_counts"]["train"]])
        return Deployed("ensemble", bundles, multipliers, prior,
                        f"ensemble of {len(bundles)} confirmation models of {deployed['candidate']} "
                        f"(units {', '.join(m['unit'] for m in found)}){note}", calibration)
    if kind == "refit":
        refit = deployed.get("refit")
        paths = refit_paths(models, refit.get("models", 1)) if refit else [models / REFIT_NAME]
        missing = [p for p in paths if not p.exists()]
        if refit is None or missing:
            raise StudyError(f"study {study_name!r} has no refit model at {(missing or paths)[0]}; run tune again "
                             "with --refits N")
        return Deployed("refit", paths, multipliers, class_fractions(refit["train_class_counts"]),
                        f"{len(paths)} refit{'s' if len(paths) > 1 else ''} of {deployed['candidate']} on "
                        f"{refit['train_lines']} non-test lines{note}", calibration)
    number = rec["trial"] if rec and rec.get("trial") is not None else max(completed_trials(study),
                                                                           key=trial_score).number
    path = model_path(models, number)
    if not path.exists():
        raise StudyError(f"the model of trial {number} is not at {path} (models are kept on the machine that ran "
                         "the study); use weight-tuner train --save-model with the exported weights")
    return Deployed("single", [path], multipliers, class_fractions(study.user_attrs["class_counts"]["train"]),
                    f"the search's model of trial {number}{note}", calibration)
