"""Storage: Optuna storage URLs, opening and checking them, and reading a study made by ``tune``.

:func:`tuned_study` is the one place that says whether a study was made by ``weight-tuner tune``
(it holds the search space and model config that every later command re-derives trials from).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import time
from typing import Any

import optuna
from optuna.trial import TrialState

from .config import ModelConfig
from .errors import StudyError
from .paths import display_url, file_in_the_way, scrub, sqlite_path, url_secrets
from .records import Recommendation
from .schemes import is_unweighted
from .space import METRIC_NAME, SPACE_VERSION, SearchSpace

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
CREATE_ATTEMPTS = 5
CREATE_RACE_MESSAGES = ("already exists", "duplicate key", "UNIQUE constraint failed", "database is locked")
# Set last by the `tune` that creates a study, after its provenance and enqueued schemes: the other processes
# started with it wait for this, so that a study's creation looks atomic to them.
SETUP_ATTR = "setup_complete"
SETUP_TIMEOUT = 120.0
FOREIGN_GRACE = 5.0
# What `tune` stores on a study it creates, and what the other commands need from it.
MADE_BY_TUNE = ("search_space", "model_config")


def check_storage(url: str, must_exist: bool = False, connect: bool = False) -> None:
    """Fail fast, touching nothing, on a SQLite path that is not a database (or is missing, if it must exist).

    With ``connect``, a server URL (PostgreSQL, ...) must also accept a connection: a job checks
    its storage before it reads the corpus.
    """
    if "://" in url and not url.startswith("sqlite"):
        userinfo = url.split("://", 1)[1].rsplit("@", 1)[0] if "@" in url.split("://", 1)[1] else ""
        if "@" in userinfo:  # a driver would read the rest of the password as the host
            raise StudyError(f"storage {display_url(url)}: the password holds a raw '@'; write it as %40 (or give "
                             "the password through ~/.pgpass or PGPASSWORD, not in the URL)")
    if connect and "://" in url and not url.startswith("sqlite"):
        import sqlalchemy

        try:
            with sqlalchemy.create_engine(url).connect():
                pass
        except Exception as exc:  # sqlalchemy raises many types; all mean "unusable storage"
            raise StudyError(f"storage {display_url(url)}: cannot connect ({type(exc).__name__}: "
                             f"{scrub(str(exc).strip().splitlines()[0], url_secrets(url))})") from exc
    path = sqlite_path(url)
    if path is not None:
        if path.exists():
            if path.is_dir():
                raise StudyError(f"storage {display_url(url)}: {path} is a directory")
            with open(path, "rb") as fh:
                head = fh.read(16)
            if head and head != b"SQLite format 3\x00":
                raise StudyError(f"storage {display_url(url)}: {path} is not a SQLite database")
            if head:
                import sqlite3

                try:
                    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
                    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
                    con.close()
                except sqlite3.DatabaseError as exc:
                    raise StudyError(f"storage {display_url(url)}: {path} is not a readable SQLite database ({exc})") from exc
                if tables and "studies" not in tables:
                    raise StudyError(f"storage {display_url(url)}: {path} is a SQLite database but not an Optuna storage")
        elif must_exist:
            raise StudyError(f"storage {display_url(url)}: {path} does not exist (run `weight-tuner tune` first)")
        if connect:  # a job will create or write the file: its folder must take it
            _check_writable_folder(url, path)
    elif "://" not in url:
        raise StudyError(f"storage {display_url(url)!r} is not a database URL (e.g. sqlite:///studies/x.db, postgresql://...)")


def _check_writable_folder(url: str, path) -> None:
    folder = path.parent
    blocking = file_in_the_way(path)
    if blocking is not None:
        raise StudyError(f"storage {display_url(url)}: {blocking} is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StudyError(f"storage {display_url(url)}: cannot create the folder {folder} ({exc.strerror or exc})") from exc
    if not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise StudyError(f"storage {display_url(url)}: {path if path.exists() else folder} is not writable")


def open_storage(url: str, *, must_exist: bool = False, heartbeat: int = 0) -> optuna.storages.RDBStorage:
    """An RDB storage with heartbeats, so a killed worker's trial is failed and retried.

    ``heartbeat`` is the interval in seconds (0: none, for read-only use); a trial
    silent for three intervals is failed and retried with the same parameters.
    With ``must_exist``, a SQLite file that does not exist is an error instead of
    being created. A file that is not an Optuna database is an error, not modified.
    """
    check_storage(url, must_exist=must_exist)
    if sqlite_path(url) is not None:
        sqlite_path(url).parent.mkdir(parents=True, exist_ok=True)
    kwargs: dict[str, Any] = {}
    if heartbeat:
        kwargs = {"heartbeat_interval": heartbeat, "grace_period": 3 * heartbeat,
                  "heartbeat_stale_trial_callback": optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=2)}
    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None
    for attempt in range(CREATE_ATTEMPTS):
        try:
            storage = optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **kwargs)
            break
        except Exception as exc:  # sqlalchemy raises many types; all mean "unusable storage"
            # Processes opening a new database at once race to create its tables and version row: the
            # losers see "already exists" or a duplicate key, and a second try finds the tables made.
            if attempt + 1 < CREATE_ATTEMPTS and any(m in str(exc) for m in CREATE_RACE_MESSAGES):
                time.sleep(0.2 * (attempt + 1))
                continue
            raise StudyError(f"storage {display_url(url)}: cannot open ({type(exc).__name__}: "
                             f"{scrub(str(exc).splitlines()[0], url_secrets(url))})") from exc
    if url.startswith("sqlite"):
        serialise_sqlite(storage.engine)
    return storage


def serialise_sqlite(engine) -> None:
    """Make every SQLite transaction take the write lock when it begins (``BEGIN IMMEDIATE``).

    Python's sqlite3 starts a transaction only at the first write, so Optuna's read-then-write of a
    waiting trial (state WAITING -> RUNNING) is not atomic between processes: two processes could both
    take one enqueued trial (Optuna issue #4002), which ``tune --jobs`` makes common. With the lock
    taken at the start, the second process waits (up to the connection's timeout) and then sees
    the trial RUNNING. SQLite admits one writer at a time anyway, so little concurrency is lost.
    """
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _no_implicit_transactions(dbapi_connection, record) -> None:
        dbapi_connection.isolation_level = None  # the driver's own BEGIN would come too late

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections made before the listeners get them on reconnecting


def study_names(storage) -> list[str]:
    """Names of the studies in a storage."""
    return sorted(s.study_name for s in optuna.study.get_all_study_summaries(storage, include_best_trial=False))


def load_existing_study(storage_url: str, name: str, **kwargs) -> optuna.Study:
    """Load a study that must exist; the error lists the studies that do."""
    storage = open_storage(storage_url, must_exist=True, heartbeat=kwargs.pop("heartbeat", 0))
    with readable_rows(storage_url, name):
        names = study_names(storage)
        if name not in names:
            listing = ", ".join(names) if names else "none"
            raise StudyError(f"study {name!r} not found in {display_url(storage_url)}; existing studies: {listing}")
        study = optuna.load_study(study_name=name, storage=storage, **kwargs)
        study.user_attrs  # parsed here, inside the guard, rather than at some later use
    return study


@contextlib.contextmanager
def readable_rows(storage_url: str, name: str):
    """Turn Optuna's failure to parse a stored attribute (a row that is not the JSON it wrote) into one line."""
    try:
        yield
    except json.JSONDecodeError as exc:
        raise StudyError(f"study {name!r} in {display_url(storage_url)}: a stored user attribute is not valid JSON "
                         f"({exc}); the database was edited or damaged") from exc


def library_versions() -> dict[str, str]:
    """Versions of Python and the libraries a result depends on (stored with every study)."""
    from importlib.metadata import PackageNotFoundError, version

    def installed(*names: str) -> str:  # read from the package metadata: nothing is imported for it
        for name in names:
            try:
                return version(name)
            except PackageNotFoundError:
                continue
        return "not installed"

    return {"python": platform.python_version(), "optuna": installed("optuna"), "keras": installed("keras"),
            "tensorflow": installed("tensorflow-cpu", "tensorflow"), "numpy": installed("numpy"),
            "pandas": installed("pandas"), "scikit-learn": installed("scikit-learn")}


def tuned_study(storage_url: str, name: str, **kwargs) -> optuna.Study:
    """Load a study that ``weight-tuner tune`` created; one clear error for any other study."""
    study = load_existing_study(storage_url, name, **kwargs)
    check_made_by_tune(study)
    return study


RECOMMENDATION_ATTR = "recommendation"
CHECKSUM_KEY = "checksum"  # in the recommendation: SHA-256 of the rest, so an edited or damaged row is refused


def _checksum(rec: dict) -> str:
    body = {k: v for k, v in rec.items() if k != CHECKSUM_KEY}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


RECOMMENDED_TRIAL_ATTR = "recommended_trial"


def store_recommendation(study: optuna.Study, rec: Recommendation | None) -> None:
    """Store the study's recommendation (or withdraw it with ``None``) with its checksum, and the recommended
    trial on its own (``recommended_trial``: optuna-dashboard cuts an attribute at 1,024 characters, so its
    decision bar cannot read the trial from the recommendation)."""
    body = None if rec is None else rec.to_dict()
    study.set_user_attr(RECOMMENDATION_ATTR, None if body is None else dict(body, **{CHECKSUM_KEY: _checksum(body)}))
    study.set_user_attr(RECOMMENDED_TRIAL_ATTR, None if rec is None else rec.trial)


def stored_recommendation(study: optuna.Study) -> Recommendation | None:
    """The study's recommendation, or ``None``; a :class:`StudyError` when its row fails its checksum or is not
    a recommendation (every command that uses it reads it here, so none acts on an edited or damaged decision)."""
    rec = study.user_attrs.get(RECOMMENDATION_ATTR)
    if rec is None:
        return None
    if not isinstance(rec, dict) or rec.get(CHECKSUM_KEY) != _checksum(rec):
        what = "has no checksum" if isinstance(rec, dict) and CHECKSUM_KEY not in rec else "fails its checksum"
        raise StudyError(f"study {study.study_name!r}: its stored recommendation {what} (the database row was edited "
                         "or damaged); run `weight-tuner tune` with the same settings to decide again")
    try:
        return Recommendation.from_dict({k: v for k, v in rec.items() if k != CHECKSUM_KEY})
    except (KeyError, TypeError, ValueError) as exc:
        raise StudyError(f"study {study.study_name!r}: its stored recommendation is not one weight-tuner reads "
                         f"({type(exc).__name__}: {exc}); run `weight-tuner tune` with the same settings to decide "
                         "again") from exc


def stored_study_attrs(storage_url: str, name: str) -> dict | None:
    """The user attrs of study ``name``, or ``None`` where it does not exist yet (a SQLite file is not created)."""
    if sqlite_path(storage_url) is not None and not sqlite_path(storage_url).exists():
        return None
    storage = open_storage(storage_url)
    with readable_rows(storage_url, name):
        if name in study_names(storage):
            return storage.get_study_user_attrs(storage.get_study_id_from_name(name))
    return None


def check_stored_data(storage_url: str, name: str, fingerprint: str, who: str = "this run") -> None:
    """:func:`check_same_data` by fingerprint alone, for a study that may not exist yet (then nothing to check):
    a job calls it before its features are computed."""
    attrs = stored_study_attrs(storage_url, name)
    if attrs is not None:
        _check_fingerprint(name, attrs, fingerprint, who)


def check_made_by_tune(study: optuna.Study) -> None:
    """Raise :class:`StudyError` unless ``study`` holds what ``tune`` stores when it creates a study."""
    missing = [k for k in MADE_BY_TUNE if k not in study.user_attrs]
    if missing:
        raise StudyError(f"study {study.study_name!r} was not created by `weight-tuner tune` (it has no "
                         f"{' or '.join(missing)}); use tune to create it, or a new --study name")


def wait_until_set_up(study: optuna.Study, timeout: float = SETUP_TIMEOUT, poll: float = 0.5) -> None:
    """Return once the process that created ``study`` has stored all it stores (:data:`SETUP_ATTR`); a
    :class:`StudyError` after ``timeout`` seconds. A study with a trial that is not waiting (made before the
    marker existed), or without tune's first attribute after a few seconds, is not waited for."""
    t0 = time.monotonic()
    while True:
        attrs = study.user_attrs
        if SETUP_ATTR in attrs:
            return
        if study.get_trials(deepcopy=False, states=(TrialState.RUNNING,) + FINISHED + (TrialState.FAIL,)):
            return  # set up before the marker existed, or not by tune: check_made_by_tune tells which
        if "decision" not in attrs and time.monotonic() - t0 > FOREIGN_GRACE:
            return  # tune stores the pending decision first, at once: this study is not being made by tune
        if time.monotonic() - t0 > timeout:
            raise StudyError(f"study {study.study_name!r} is not set up {timeout:.0f}s after another process created it "
                             "(it has no setup_complete attribute); if that process died, delete the study "
                             "(optuna delete-study) or use a new --study name")
        time.sleep(poll)


def describe(study: optuna.Study, metric: str, attrs: dict) -> None:
    """Set each of ``attrs`` (the dashboard lists them in the order first set) and the metric name, where missing:
    a process killed between creating a companion study and describing it leaves some unset, and whoever
    finishes its work sets them."""
    have = study.user_attrs
    for key, value in attrs.items():
        if key not in have:
            study.set_user_attr(key, value)
    if not study.metric_names:
        study.set_metric_names([metric])  # the dashboard's axis, not "Objective 0"


def finished_count(study: optuna.Study) -> int:
    """Trials that are complete or pruned, from every worker."""
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def storage_of(study: optuna.Study):
    """The storage object a loaded study reads and writes (Optuna keeps it private); the one place
    that reaches for it, so companion studies share the study's connection and heartbeat settings."""
    return study._storage


def completed_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The study's completed trials; a clear error if there are none yet."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        raise StudyError(f"study {study.study_name!r} has no completed trial yet ({len(study.trials)} trials in "
                         "all); run `weight-tuner tune` first")
    return complete


def check_same_data(study: optuna.Study, prepared, who: str = "this run") -> None:
    """A :class:`StudyError` unless ``prepared`` is the data the study was run on (its fingerprint), with the
    features it was run on (their version: a study made before versions were stored was made with version 3)."""
    _check_fingerprint(study.study_name, study.user_attrs, prepared.fingerprint, who)
    made, computed = study.user_attrs.get("features_version", 3), prepared.meta()["features_version"]
    if made != computed:
        raise StudyError(f"study {study.study_name!r} was made with features version {made}; this weight-tuner "
                         f"computes version {computed}, whose trials would not compare with its own. Use a new "
                         "--study name.")


def _check_fingerprint(name: str, attrs: dict, fingerprint: str, who: str) -> None:
    if attrs.get("data_fingerprint") not in (None, fingerprint):
        raise StudyError(f"study {name!r} was run on data {attrs['data_fingerprint']} "
                         f"({attrs.get('source')}); {who}'s data is {fingerprint}. Use a new --study name "
                         "or the study's data.")


def trial_score(trial) -> float:
    """Validation important_f1 of a finished trial: the value, or the stored metric in multi-objective mode."""
    return trial.user_attrs.get(METRIC_NAME, trial.value if trial.values and len(trial.values) == 1 else -1.0)


def trial_config(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> ModelConfig:
    """The full model config a finished trial trained with, re-derived from its params."""
    check_made_by_tune(study)
    stored = study.user_attrs["search_space"]
    if stored.get("version", SPACE_VERSION) != SPACE_VERSION:
        raise StudyError(f"study {study.study_name!r} was made with search space version {stored.get('version')}; this "
                         f"weight-tuner replays version {SPACE_VERSION} only. Use the weight-tuner that made it.")
    space = SearchSpace.from_dict(stored)
    outside = trial.user_attrs.get("weights_given") if trial.user_attrs.get("outside_space") else None
    config = space.suggest(optuna.trial.FixedTrial(trial.params), study.user_attrs["model_config"], outside)
    return config.replace(class_weights=trial.user_attrs.get("class_weights", config.class_weights))


def unweighted_config(study: optuna.Study) -> ModelConfig:
    """The study's model config with no class weights: what the unweighted model and its refits train with."""
    return ModelConfig.from_dict(dict(study.user_attrs["model_config"], class_weights=None))


def unweighted_number(study: optuna.Study) -> int | None:
    """The number of the study's completed unweighted trial (``None`` if it has none)."""
    return next((t.number for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                 if is_unweighted(t)), None)
