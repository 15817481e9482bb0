"""The artifact store: files a study keeps beside its storage, as Optuna artifacts.

The split's chunk lists are an artifact of the study (``split.json``, checked on resume), and every
unit run's model is an artifact of its unit trial (one zipped bundle each, in a
``FileSystemArtifactStore``), so a worker on another machine keeps its models where ``tune`` and
``predict`` find them when the store's folder is shared. Each artifact's size and SHA-256 are
recorded when it is saved and checked when it is fetched. Which members a decision deploys is
:mod:`.confirm.deployed`'s; what ``predict --study`` loads is :mod:`.deploy.loaded`'s.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import zipfile
from pathlib import Path

import optuna
from optuna.artifacts import FileSystemArtifactStore, download_artifact, upload_artifact

from .errors import DataError, IntegrityError, StudyError
from .paths import artifacts_dir, atomic_write_bytes, check_bundle, file_digest

logger = logging.getLogger(__name__)

MEMBER_ATTR = "member"  # a unit trial's user attr: {"artifact_id", "store"}
BUNDLE_NAME = "member.keras"


def members_dir(storage_url: str, study_name: str, override: str | Path | None = None) -> Path:
    """The artifact store's folder for a study's member models: ``override``, else beside its other files."""
    return Path(override) if override else artifacts_dir(storage_url, study_name) / "members"


MEMBERS_ID_ATTR = "members_folder"  # a study's user attr: the id of the one folder its members are kept in


def _marker(folder: Path, token: str) -> Path:
    return folder / f".weight-tuner-study-{token}"


def mark_members_folder(study: optuna.Study, folder: Path) -> None:
    """Make ``folder`` the members folder of a new ``study``: a marker file in it, named by an id the study
    keeps. Every other process of the study must find the marker in its own members folder
    (:func:`check_members_folder`), so that all the confirmation's models land in one place."""
    import uuid

    token = uuid.uuid4().hex
    _store(folder)
    atomic_write_bytes(_marker(folder, token), f"members folder of study {study.study_name!r}\n".encode())
    study.set_user_attr(MEMBERS_ID_ATTR, token)


def check_members_folder(attrs: dict, study_name: str, folder: Path) -> None:
    """A :class:`StudyError` unless ``folder`` is the members folder the study was created with (it holds the
    study's marker); a study made before markers is not checked. Called before any work, so that a process on
    another machine, or in another working directory, never trains models that ``tune`` cannot find."""
    token = attrs.get(MEMBERS_ID_ATTR)
    if token and not _marker(folder, token).is_file():
        raise StudyError(f"--members {folder}: not the folder study {study_name!r} keeps its confirmation models "
                         f"in (it lacks the marker {_marker(folder, token).name}); every process of a study shares "
                         "one members folder: on another machine or in another directory, pass --members with "
                         "that folder (a shared mount)")


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
    from .bundles import save_bundle

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


def fetch_member(member: dict, cache: Path, folder: str | Path) -> Path:
    """The local bundle path of a member (downloaded from the members folder ``folder`` and unpacked into
    ``cache`` once). Only ``folder`` is read: the folder recorded when the member was saved may be another
    machine's.

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
    folder = Path(folder)
    where = f"member model {member['artifact_id']} of unit {member.get('unit', '?')}"
    if not (folder / member["artifact_id"]).exists():
        raise StudyError(f"{where} is not in {folder} (it was saved in {member.get('store', '?')}; pass --members "
                         "with the folder that holds it)")
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


def fetch_members(members: list[dict], cache: Path, folder: str | Path) -> list[Path]:
    """The local bundle paths of an ensemble's members (:func:`fetch_member` for each)."""
    return [fetch_member(m, cache, folder) for m in members]


