"""Where things live and how they are written: the one home of file I/O conventions.

Studies and their artifacts live under ``studies/`` by default: ``studies/<study>.db`` (the
SQLite storage), ``studies/<study>/`` (plots and ``models/``), ``studies/<study>-best.json``
(the export) and ``studies/cache/`` (features). Every file we write goes through
:func:`atomic_write_bytes`, so a reader never sees a partial file and a failed write keeps
the old one.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from .errors import ConfigError, WeightTunerError

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


def display_url(url: str) -> str:
    """A storage URL as logs and messages show it: a password in it becomes ``***``.

    The user info ends at the *last* ``@`` (a host has none), so a password holding ``@``, ``!``, ``%``
    or ``/`` is hidden whole; a parser that stops at the first ``@`` would show half of it."""
    if "://" not in url or url.startswith("sqlite"):
        return url
    head, rest = url.split("://", 1)
    at = rest.rfind("@")
    if at < 0 or ":" not in rest[:at]:
        return url  # no password
    return f"{head}://{rest[:at].split(':', 1)[0]}:***@{rest[at + 1:]}"


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


def bundle_paths(model_file: str | Path) -> tuple[Path, Path, Path, Path]:
    """The files of a saved model bundle: ``X.keras``, ``X.featurizer.pkl``, ``X.config.json``
    and ``X.labels.json`` (the raw-label mapping the model was trained with)."""
    model_file = Path(model_file)
    if model_file.suffix != ".keras":
        raise ConfigError(f"model path {model_file} must end in .keras")
    stem = model_file.with_suffix("")
    return model_file, Path(f"{stem}.featurizer.pkl"), Path(f"{stem}.config.json"), Path(f"{stem}.labels.json")


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file and rename, so no partial file is ever seen.

    The file gets the permissions a plain write would (0666 less the umask; mkstemp alone gives 0600).
    A path that cannot be written is a one-line :class:`WeightTunerError`, and an existing file stays.
    """
    path = Path(path)
    if path.is_dir():
        raise WeightTunerError(f"cannot write {path}: it is a directory")
    blocking = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise WeightTunerError(f"cannot write {path}: {blocking} is not a directory")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise WeightTunerError(f"cannot write {path}: {exc.strerror or exc}") from exc
    try:
        os.fchmod(fd, 0o666 & ~_umask())
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
