"""The deployed model: the confirmation's models of the recommended configuration, kept and averaged.

Every unit run of the confirmation trains its candidate on the unit's training folds. Those models
are kept as Optuna artifacts of their unit trials (one zipped bundle each, in a
``FileSystemArtifactStore``), so a worker on another machine keeps its models where ``tune`` and
``predict`` find them when the store's folder is shared. After the decision the recommended
candidate's members form a cross-validation ensemble: ``predict --study`` averages their per-line
probabilities. A refit (every non-test line, one model) is the alternative kept beside it.
"""

from __future__ import annotations

import logging
import tempfile
import zipfile
from pathlib import Path

import optuna
from optuna.artifacts import FileSystemArtifactStore, download_artifact, upload_artifact

from ..errors import StudyError
from ..paths import artifacts_dir

logger = logging.getLogger(__name__)

MEMBER_ATTR = "member"  # a unit trial's user attr: {"artifact_id", "store"}
BUNDLE_NAME = "member.keras"
DEPLOYED_KINDS = ("ensemble", "refit", "single")
DEFAULT_DEPLOYED = "ensemble"
REFIT_NAME = "refit.keras"  # in the study's models folder


def members_dir(storage_url: str, study_name: str, override: str | Path | None = None) -> Path:
    """The artifact store's folder for a study's member models: ``override``, else beside its other files."""
    return Path(override) if override else artifacts_dir(storage_url, study_name) / "members"


def save_member(trial: optuna.Trial, model, featurizer, config: dict, label_map: dict, folder: Path) -> str:
    """Upload ``model`` as one zipped bundle, an artifact of the unit ``trial``; return the artifact id."""
    from ..train import save_bundle

    folder.mkdir(parents=True, exist_ok=True)
    store = FileSystemArtifactStore(str(folder))
    with tempfile.TemporaryDirectory() as tmp:
        save_bundle(model, featurizer, config, Path(tmp) / BUNDLE_NAME, label_map)
        packed = Path(tmp) / "member.zip"
        with zipfile.ZipFile(packed, "w", zipfile.ZIP_DEFLATED) as zf:
            for f in sorted(Path(tmp).iterdir()):
                if f != packed:
                    zf.write(f, f.name)
        artifact_id = upload_artifact(artifact_store=store, file_path=str(packed), study_or_trial=trial)
    trial.set_user_attr(MEMBER_ATTR, {"artifact_id": artifact_id, "store": str(folder.resolve())})
    return artifact_id


def fetch_member(member: dict, cache: Path, store_override: str | Path | None = None) -> Path:
    """The local bundle path of a member (downloaded and unpacked into ``cache`` once).

    A member whose artifact cannot be found is a :class:`StudyError` naming the store's folder.
    """
    target = cache / member["artifact_id"]
    bundle = target / BUNDLE_NAME
    if bundle.exists():
        return bundle
    folder = Path(store_override) if store_override else Path(member["store"])
    if not (folder / member["artifact_id"]).exists():
        raise StudyError(f"member model {member['artifact_id']} of unit {member.get('unit', '?')} is not in "
                         f"{folder} (the members' folder must be reachable here; pass --members DIR)")
    target.mkdir(parents=True, exist_ok=True)
    packed = target / "member.zip"
    download_artifact(artifact_store=FileSystemArtifactStore(str(folder)), artifact_id=member["artifact_id"],
                      file_path=str(packed))
    with zipfile.ZipFile(packed) as zf:
        zf.extractall(target)
    packed.unlink()
    return bundle


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
                            train_class_counts=t.user_attrs.get("train_class_counts")))
    return members


def class_fractions(counts: dict[str, int]) -> dict[str, float]:
    """Class counts as fractions (a training split's class balance)."""
    total = sum(counts.values())
    return {c: counts[c] / total for c in counts}


def mean_fractions(all_counts: list[dict[str, int]]) -> dict[str, float]:
    """The mean class balance over several training sets (an ensemble's members)."""
    fractions = [class_fractions(c) for c in all_counts]
    return {c: sum(f[c] for f in fractions) / len(fractions) for c in fractions[0]}
