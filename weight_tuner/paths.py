"""Where things live and how they are written: the one home of file I/O conventions.

Studies and their artifacts live under ``studies/`` by default: ``studies/<study>.db`` (the
SQLite storage), ``studies/<study>/`` (plots and ``models/``), ``studies/<study>-best.json``
(the export) and ``studies/cache/`` (features). Every file we write goes through
:func:`atomic_write_bytes`, so a reader never sees a partial file and a failed write keeps
the old one.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, NamedTuple

from .errors import ConfigError, DataError, IntegrityError, WeightTunerError

STUDIES_DIR = Path("studies")
DEFAULT_CACHE_DIR = STUDIES_DIR / "cache"
SQLITE_PREFIX = "sqlite:///"


# The storage URL handed to a helper process through its environment: a command line is readable by every
# local user (``ps``, /proc/PID/cmdline), and the URL may hold a password.
STORAGE_ENV = "WEIGHT_TUNER_STORAGE"


def default_storage_url(study: str) -> str:
    """``sqlite:///studies/<study>.db``: the storage a study uses unless ``--storage`` says otherwise."""
    return f"{SQLITE_PREFIX}{STUDIES_DIR / study}.db"


def default_export_path(study: str) -> Path:
    """``studies/<study>-best.json``."""
    return STUDIES_DIR / f"{study}-best.json"


# A password given as a query parameter (libpq and the drivers read ``?password=``).
_QUERY_PASSWORD = re.compile(r"([?&](?:password|passwd|pwd)=)([^&#\s]*)", re.IGNORECASE)


def display_url(url: str) -> str:
    """A storage URL as logs and messages show it: a password in it becomes ``***``, in the user info or in the
    query (``?password=``).

    The user info ends at the *last* ``@`` (a host has none), so a password holding ``@``, ``!``, ``%``
    or ``/`` is hidden whole; a parser that stops at the first ``@`` would show half of it."""
    if "://" not in url or url.startswith("sqlite"):
        return url
    url = _QUERY_PASSWORD.sub(r"\1***", url)
    head, rest = url.split("://", 1)
    at = rest.rfind("@")
    if at < 0 or ":" not in rest[:at]:
        return url  # no password in the user info
    return f"{head}://{rest[:at].split(':', 1)[0]}:***@{rest[at + 1:]}"


def url_secrets(url: str | None) -> list[str]:
    """Every form of the password in a storage URL that a message may repeat: as written and percent-decoded,
    and, for a raw ``@`` in it (which a driver reads as the end of the user info), the pieces around it;
    longest first. Empty for a URL without a password."""
    from urllib.parse import unquote

    if not url or "://" not in url or url.startswith("sqlite"):
        return []
    rest = url.split("://", 1)[1]
    at = rest.rfind("@")
    found = [m.group(2) for m in _QUERY_PASSWORD.finditer(url)]
    if at >= 0 and ":" in rest[:at]:
        found.append(rest[:at].split(":", 1)[1])
    forms = {f for s in found if s for f in (s, unquote(s))}
    forms |= {piece for f in list(forms) for piece in f.split("@") if len(piece) >= 3}
    return sorted(forms, key=len, reverse=True)


def scrub(text: str, secrets: list[str]) -> str:
    """``text`` with every one of ``secrets`` (:func:`url_secrets`) shown as ``***``: for messages that are
    not ours, such as a database driver's."""
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def masked_command(argv: list[str]) -> str:
    """A command line as written into a file or log: every storage URL in it shown by :func:`display_url`."""
    import shlex

    def mask(arg: str) -> str:
        if "://" not in arg:
            return arg
        if arg.startswith("--") and "=" in arg:
            option, value = arg.split("=", 1)
            return f"{option}={display_url(value)}"
        return display_url(arg)

    return shlex.join([mask(a) for a in argv])


def sqlite_path(url: str) -> Path | None:
    """The database file of a ``sqlite:///`` URL; ``None`` for any other storage."""
    return Path(url[len(SQLITE_PREFIX):]) if url.startswith(SQLITE_PREFIX) else None


def artifacts_dir(storage_url: str, study_name: str) -> Path:
    """Where plots and models of a study live: beside the SQLite file, else under ``studies/``."""
    db = sqlite_path(storage_url)
    return (db.parent if db is not None else STUDIES_DIR) / study_name


def models_dir(storage_url: str, study_name: str) -> Path:
    """The folder of a study's saved trial models."""
    return artifacts_dir(storage_url, study_name) / "models"


def model_path(models: Path, number: int) -> Path:
    """The saved model of trial ``number`` in the folder ``models``."""
    return models / f"trial-{number}.keras"


class BundlePaths(NamedTuple):
    """The files of a saved model bundle ``X.keras``."""

    keras: Path
    featurizer: Path  # X.featurizer.json: vocabularies and IDF weights, never pickle
    config: Path
    labels: Path  # the raw-label mapping the model was trained with
    manifest: Path  # X.manifest.json: size and SHA-256 of the four others, written last

    @property
    def old_pickle(self) -> Path:
        """Where a bundle saved by an earlier weight-tuner kept its pickled featurizer."""
        return self.featurizer.with_suffix(".pkl")


def bundle_paths(model_file: str | Path) -> BundlePaths:
    """The files of the model bundle ``X.keras`` (:class:`BundlePaths`)."""
    model_file = Path(model_file)
    if model_file.suffix != ".keras":
        raise ConfigError(f"model path {model_file} must end in .keras")
    stem = model_file.with_suffix("")
    return BundlePaths(model_file, Path(f"{stem}.featurizer.json"), Path(f"{stem}.config.json"),
                       Path(f"{stem}.labels.json"), Path(f"{stem}.manifest.json"))


# ----------------------------------------------------------------------------------- integrity

def file_digest(path: str | Path) -> dict:
    """``{"bytes": size, "sha256": hex}`` of a file, read in blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return {"bytes": os.path.getsize(path), "sha256": h.hexdigest()}


def write_manifest(path: str | Path, files: list[Path]) -> dict:
    """Write the digests of ``files`` (named relative to the manifest's folder) to ``path``, atomically and
    after them: a manifest exists only for files that were complete. Returns the manifest."""
    path = Path(path)
    manifest = {"format": 1, "files": {str(Path(f).relative_to(path.parent)): file_digest(f) for f in files}}
    write_json(path, manifest)
    return manifest


def check_manifest(path: str | Path, what: str) -> None:
    """An :class:`IntegrityError` naming the first file listed in the manifest ``path`` that is missing or
    whose size or SHA-256 differs (``what`` names the thing, e.g. "model bundle")."""
    path = Path(path)
    if not path.exists():
        raise IntegrityError(f"{what}: {path} is missing (an unfinished or foreign save)")
    manifest = read_json(path, f"{what} manifest")
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or not files:
        raise IntegrityError(f"{what}: {path} lists no files")
    for name, want in files.items():
        f = path.parent / name
        if not f.is_file():
            raise IntegrityError(f"{what}: {f} is missing (listed in {path.name})")
        have = file_digest(f) if os.path.getsize(f) == want.get("bytes") else {"bytes": os.path.getsize(f)}
        if have != want:
            how = ("its SHA-256 differs" if have["bytes"] == want.get("bytes")
                   else f"{have['bytes']} bytes, {want.get('bytes')} recorded")
            raise IntegrityError(f"{what}: {f} is corrupt ({how} in {path.name})")


def current_umask() -> int:
    """The process's umask (reading it means setting it: set back at once)."""
    current = os.umask(0)
    os.umask(current)
    return current


def check_can_write(path: str | Path) -> None:
    """A one-line :class:`WeightTunerError` when ``path`` is a directory or lies under a file: what a command
    checks for every output before it reads or computes anything."""
    path = Path(path)
    if path.is_dir():
        raise WeightTunerError(f"cannot write {path}: it is a directory")
    blocking = file_in_the_way(path)
    if blocking is not None:
        raise WeightTunerError(f"cannot write {path}: {blocking} is not a directory")


def file_in_the_way(path: str | Path) -> Path | None:
    """The first of ``path``'s folders that exists as a file (no folder can be made there), or ``None``."""
    return next((p for p in Path(path).parents if p.exists() and not p.is_dir()), None)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file and rename, so no partial file is ever seen.

    The file gets the permissions a plain write would (0666 less the umask; mkstemp alone gives 0600).
    A path that cannot be written is a one-line :class:`WeightTunerError`, and an existing file stays.
    """
    path = Path(path)
    check_can_write(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise WeightTunerError(f"cannot write {path}: {exc.strerror or exc}") from exc
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(path: str | Path, payload: Any) -> None:
    """Write ``payload`` as indented JSON, atomically (:func:`atomic_write_bytes`)."""
    atomic_write_bytes(path, (json.dumps(payload, indent=2) + "\n").encode())


def read_json(path: str | Path, what: str) -> Any:
    """Read a JSON file, turning any failure into a one-line :class:`ConfigError` naming ``what`` and the path."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{what} {path}: cannot read ({exc.strerror or exc})") from exc
    return parse_json(text, f"{what} {path}")


def parse_json(text: str, where: str) -> Any:
    """Parse JSON text; errors name ``where`` and the line and column."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{where}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from exc
    except ValueError as exc:  # e.g. NaN handling differences
        raise ConfigError(f"{where}: invalid JSON: {exc}") from exc


def check_bundle(model_path: str | Path) -> None:
    """A one-line :class:`.errors.DataError` unless the bundle's files match its manifest (an old bundle with
    a pickled featurizer is refused: loading pickle can run code)."""
    paths = bundle_paths(model_path)
    if paths.old_pickle.exists() and not paths.manifest.exists():
        raise DataError(f"model bundle {paths.keras} has a pickled featurizer ({paths.old_pickle.name}), which "
                        "weight-tuner no longer loads (unpickling can run code); train it again")
    if not paths.keras.exists():
        raise DataError(f"model bundle file {paths.keras} does not exist")
    check_manifest(paths.manifest, f"model bundle {paths.keras.name}")
