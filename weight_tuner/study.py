"""Study stage: the Optuna study over class weights, with the guide's schemes as baselines.

The search space is in :class:`SearchSpace`; the warm-start schemes in
:func:`warm_start_schemes`; one trial is :func:`run_trial`; the whole job is
:func:`tune`. Trials persist in any Optuna RDB storage (SQLite by default).
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import sys
import time
import tomllib
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState

from .config import CLASSES, ConfigError, WeightTunerError, validate_config

# Heartbeats, metric names and notes are marked experimental by Optuna; we rely on them knowingly.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
optuna.logging.set_verbosity(optuna.logging.WARNING)  # we print one line per trial ourselves

METRIC_NAME = "val_important_f1"
SPACE_VERSION = 1
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)

# A small model so that `make tune` on the sample corpus finishes in minutes on 2 cores.
QUICK_MODEL = {"input_projection": 64, "hidden_size": 32, "num_layers": 1, "epochs": 6, "batch_size": 32,
               "learning_rate": 0.003, "verbosity": 0}


# How candidates are evaluated (see recommend.py): search on one split, then confirm the top
# candidates on folds x repeats units ("confirm"), or score every trial on the units with
# Wilcoxon pruning and then confirm on fresh units ("cv").
DESIGNS = ("confirm", "cv")
DEFAULT_EVALUATION = {"design": "confirm", "folds": 3, "repeats": 2, "top": 3}


class StudyError(WeightTunerError):
    """A storage or study problem (unknown study, unreadable storage, empty study)."""


class TrialTimeoutError(WeightTunerError):
    """A trial ran past ``--trial-timeout`` (checked after each epoch)."""


# Objective names on the command line -> keys of the validation stats.
OBJECTIVES = {"important_f1": "important_f1", "nomenclature_f1": "Nomenclature_f1",
              "description_f1": "Description_f1", "misc_f1": "Misc_f1", "accuracy": "accuracy"}


def parse_objectives(text: str | None) -> list[str]:
    """``"nomenclature_f1,description_f1"`` -> objective names; the default is important_f1 alone."""
    names = [n.strip() for n in (text or "important_f1").split(",") if n.strip()]
    for n in names:
        if n not in OBJECTIVES:
            raise ConfigError(f"--objectives: unknown objective {n!r}; choose from {', '.join(OBJECTIVES)}")
    if len(set(names)) != len(names) or not names:
        raise ConfigError(f"--objectives: give distinct objective names, got {text!r}")
    return names


# --------------------------------------------------------------------------- search space

@dataclass
class SearchSpace:
    """Where the sampler looks. Only weight ratios matter, so Misc is fixed at 1 by default.

    The bounds include the unweighted point (1, 1, 1) and weak weighting: on real
    data the guide's 100/10/0.1 scored far below no weights at all.
    """

    nomenclature: tuple[float, float] = (0.1, 1000.0)
    description: tuple[float, float] = (0.1, 1000.0)
    misc: tuple[float, float] | None = None  # None: Misc fixed at 1
    window_size: list[int] | None = None
    epochs: tuple[int, int] | None = None
    learning_rate: tuple[float, float] | None = None
    version: int = SPACE_VERSION

    def __post_init__(self):
        def numbers(value, kind) -> bool:
            return isinstance(value, (list, tuple)) and all(
                isinstance(v, kind) and not isinstance(v, bool) for v in value)

        for name in ("nomenclature", "description", "misc", "learning_rate"):
            bounds = getattr(self, name)
            if bounds is None:
                continue
            if not numbers(bounds, (int, float)) or len(bounds) != 2 or not (
                    0 < float(bounds[0]) < float(bounds[1]) < math.inf):
                raise ConfigError(f"space.{name}: expected [low, high] numbers with 0 < low < high, got {bounds!r}")
            setattr(self, name, (float(bounds[0]), float(bounds[1])))
        if self.epochs is not None and (not numbers(self.epochs, int) or len(self.epochs) != 2
                                        or not 1 <= self.epochs[0] <= self.epochs[1]):
            raise ConfigError(f"space.epochs: expected [low, high] integers >= 1, got {self.epochs!r}")
        if self.window_size is not None and (not numbers(self.window_size, int) or not self.window_size
                                             or min(self.window_size) < 1):
            raise ConfigError(f"space.window_size: expected a list of integers >= 1, got {self.window_size!r}")
        if self.misc is None and not (self.nomenclature[0] <= 1.0 <= self.nomenclature[1]
                                      and self.description[0] <= 1.0 <= self.description[1]):
            raise ConfigError("space: the bounds must include 1 so that the unweighted point is in the space")

    @classmethod
    def from_dict(cls, raw: dict, where: str = "space") -> "SearchSpace":
        """Build from a config table, rejecting unknown keys."""
        known = {f for f in cls.__dataclass_fields__}
        for key in raw:
            if key not in known:
                raise ConfigError(f"{where}: unknown key {key!r}; known keys: {', '.join(sorted(known))}")
        return cls(**raw)

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    def suggest(self, trial: optuna.Trial, base_config: dict) -> dict:
        """Sample one trial's config: weights for the three classes plus any widened levers."""
        with warnings.catch_warnings():
            # Enqueued schemes may lie outside the bounds (the guide's 100/20/0.01); they still run.
            warnings.filterwarnings("ignore", message="Fixed parameter .* is out of range")
            weights = {
                "Nomenclature": trial.suggest_float("w_Nomenclature", *self.nomenclature, log=True),
                "Description": trial.suggest_float("w_Description", *self.description, log=True),
                "Misc": trial.suggest_float("w_Misc", *self.misc, log=True) if self.misc else 1.0,
            }
            config = dict(validate_config(base_config), class_weights=weights)
            if self.window_size:
                config["window_size"] = trial.suggest_categorical("window_size", self.window_size)
                config["prediction_stride"] = min(config["prediction_stride"], config["window_size"])
            if self.epochs:
                config["epochs"] = trial.suggest_int("epochs", *self.epochs)
            if self.learning_rate:
                config["learning_rate"] = trial.suggest_float("learning_rate", *self.learning_rate, log=True)
        return validate_config(config)

    def params_for(self, weights: dict[str, float]) -> dict[str, float]:
        """Trial params for a weight vector: ratios to Misc when Misc is fixed."""
        if self.misc:
            return {f"w_{c}": float(weights[c]) for c in CLASSES}
        return {f"w_{c}": float(weights[c]) / float(weights["Misc"]) for c in ("Nomenclature", "Description")}


@dataclass
class StudyConfig:
    """A study config file (TOML): ``[space]``, ``[model]`` and ``[pruner]`` tables."""

    space: SearchSpace = field(default_factory=SearchSpace)
    model: dict = field(default_factory=dict)
    pruner: dict = field(default_factory=lambda: {"type": "median", "n_startup_trials": 5, "n_warmup_steps": 1})
    schemes: list[str] | None = None  # warm-start schemes to enqueue; None: all of them
    objectives: list[str] = field(default_factory=lambda: ["important_f1"])
    evaluation: dict = field(default_factory=lambda: dict(DEFAULT_EVALUATION))

    def set_evaluation(self, **values) -> None:
        """Override evaluation settings (``design``, ``folds``, ``repeats``, ``top``), validating them."""
        merged = dict(self.evaluation, **{k: v for k, v in values.items() if v is not None})
        for key in merged:
            if key not in DEFAULT_EVALUATION:
                raise ConfigError(f"evaluation: unknown key {key!r}; known keys: {', '.join(DEFAULT_EVALUATION)}")
        if merged["design"] not in DESIGNS:
            raise ConfigError(f"evaluation.design: unknown {merged['design']!r}; choose from {', '.join(DESIGNS)}")
        for key, low in (("folds", 2), ("repeats", 1), ("top", 1)):
            value = merged[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"evaluation.{key}: expected an integer >= {low}, got {value!r}")
        self.evaluation = merged
        if merged["design"] == "cv":
            # Per-unit reports are compared paired against the best trial; per-epoch pruning cannot mix with it.
            self.pruner = {"type": "wilcoxon", "p_threshold": 0.1, "n_startup_steps": 2}

    @classmethod
    def load(cls, path: str | Path | None) -> "StudyConfig":
        """Read a TOML study config, or a JSON model config; ``None`` gives the defaults."""
        if path is None:
            return cls(model=dict(QUICK_MODEL))
        path = Path(path)
        if path.suffix == ".json":
            from .config import load_json_file

            raw_model = load_json_file(path, "config")
            if not isinstance(raw_model, dict):
                raise ConfigError(f"config {path}: expected a JSON object")
            validate_config(raw_model)
            return cls(model=raw_model)
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"study config {path}: cannot read ({exc.strerror or exc})") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"study config {path}: invalid TOML: {exc}") from exc
        for key in raw:
            if key not in ("space", "model", "pruner", "schemes", "evaluation"):
                raise ConfigError(f"study config {path}: unknown key {key!r}; "
                                  "expected space, model, pruner, schemes, evaluation")
        for table in ("space", "model", "pruner", "evaluation"):
            if not isinstance(raw.get(table, {}), dict):
                raise ConfigError(f"study config {path}: {table} must be a table ([{table}]), got {raw[table]!r}")
        if raw.get("schemes") is not None and not (isinstance(raw["schemes"], list)
                                                   and all(isinstance(n, str) for n in raw["schemes"])):
            raise ConfigError(f"study config {path}: schemes must be a list of scheme names, got {raw['schemes']!r}")
        model = dict(QUICK_MODEL, **raw.get("model", {}))
        validate_config(model)
        user_pruner = raw.get("pruner", {})
        # The default's arguments apply only to the default pruner type.
        pruner = user_pruner if user_pruner.get("type", "median") != "median" else dict(cls().pruner, **user_pruner)
        out = cls(SearchSpace.from_dict(raw.get("space", {}), f"study config {path} [space]"), model, pruner,
                  raw.get("schemes"))
        out.set_evaluation(**raw.get("evaluation", {}))
        out.check_schemes()
        out.make_pruner()  # validate now, not after hours of trials
        return out

    def check_schemes(self) -> None:
        """Reject scheme names that do not exist."""
        known = list(GUIDE_SCHEMES) + list(count_schemes({c: 1 for c in CLASSES}))
        for name in self.schemes or []:
            if name not in known:
                raise ConfigError(f"schemes: unknown scheme {name!r}; known: {', '.join(known)}")

    def make_pruner(self) -> optuna.pruners.BasePruner:
        """The configured Optuna pruner (MedianPruner by default)."""
        kind = self.pruner.get("type", "median")
        kwargs = {k: v for k, v in self.pruner.items() if k != "type"}
        pruners = {"median": optuna.pruners.MedianPruner, "percentile": optuna.pruners.PercentilePruner,
                   "hyperband": optuna.pruners.HyperbandPruner, "none": optuna.pruners.NopPruner,
                   "wilcoxon": optuna.pruners.WilcoxonPruner}
        if kind not in pruners:
            raise ConfigError(f"pruner.type: unknown {kind!r}; choose from {', '.join(pruners)}")
        try:
            return pruners[kind](**kwargs)
        except (TypeError, ValueError) as exc:  # Optuna checks its arguments with ValueError
            raise ConfigError(f"pruner: {str(exc).splitlines()[0]}") from exc


# --------------------------------------------------------------------------- warm start

GUIDE_SCHEMES: dict[str, dict[str, float]] = {
    "unweighted": {"Nomenclature": 1.0, "Description": 1.0, "Misc": 1.0},
    "guide_recommended_100_10_0.1": {"Nomenclature": 100.0, "Description": 10.0, "Misc": 0.1},
    "guide_balanced_50_50_0.1": {"Nomenclature": 50.0, "Description": 50.0, "Misc": 0.1},
    "guide_critical_100_20_0.01": {"Nomenclature": 100.0, "Description": 20.0, "Misc": 0.01},
    "guide_iteration1_10_5_1": {"Nomenclature": 10.0, "Description": 5.0, "Misc": 1.0},
    "guide_iteration2_50_10_0.5": {"Nomenclature": 50.0, "Description": 10.0, "Misc": 0.5},
    "guide_iteration3_30_10_0.5": {"Nomenclature": 30.0, "Description": 10.0, "Misc": 0.5},
}


# beta 0.99 and 0.999 give uniform weights once every class has thousands of lines (beta^n ~ 0);
# these two still differ between classes at SKOL's counts (7k / 27k / 130k lines).
EFFECTIVE_NUMBER_BETAS = (0.9999, 0.99999)


def count_schemes(counts: dict[str, int]) -> dict[str, dict[str, float]]:
    """Weights derived from the training split's class counts."""
    n = {c: float(counts[c]) for c in CLASSES}
    total = sum(n.values())
    out = {
        "inverse_frequency": {c: max(n.values()) / n[c] for c in CLASSES},
        "balanced": {c: total / (len(CLASSES) * n[c]) for c in CLASSES},
        "sqrt_inverse_frequency": {c: math.sqrt(max(n.values()) / n[c]) for c in CLASSES},
    }
    for beta in EFFECTIVE_NUMBER_BETAS:
        # Effective number of samples (Cui et al. 2019): weight = (1 - beta) / (1 - beta^n).
        out[f"effective_number_{beta}"] = {c: (1 - beta) / (1 - beta ** n[c]) for c in CLASSES}
    return out



def warm_start_schemes(train_counts: dict[str, int]) -> dict[str, dict[str, float]]:
    """All baseline schemes, in the order they are enqueued (unweighted first)."""
    return {**GUIDE_SCHEMES, **count_schemes(train_counts)}


def group_schemes(schemes: dict[str, dict[str, float]], train_counts: dict[str, int]) -> list[list[str]]:
    """Scheme names grouped by the weights they train with (normalised), in order of first appearance.

    ``inverse_frequency`` and ``balanced`` have the same ratios, so they are one point and train once.
    """
    from .model import normalise_weights

    groups: dict[tuple, list[str]] = {}
    for name, weights in schemes.items():
        trained = normalise_weights(weights, train_counts)
        groups.setdefault(tuple(trained[c] for c in CLASSES), []).append(name)
    return list(groups.values())


# --------------------------------------------------------------------------- storage

def check_storage(url: str, must_exist: bool = False, connect: bool = False) -> None:
    """Fail fast, touching nothing, on a SQLite path that is not a database (or is missing, if it must exist).

    With ``connect``, a server URL (PostgreSQL, ...) must also accept a connection: a job checks
    its storage before it reads the corpus.
    """
    if connect and "://" in url and not url.startswith("sqlite"):
        import sqlalchemy

        try:
            with sqlalchemy.create_engine(url).connect():
                pass
        except Exception as exc:  # sqlalchemy raises many types; all mean "unusable storage"
            raise StudyError(f"storage {url}: cannot connect ({type(exc).__name__}: "
                             f"{str(exc).strip().splitlines()[0]})") from exc
    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///"):])
        if path.exists():
            if path.is_dir():
                raise StudyError(f"storage {url}: {path} is a directory")
            with open(path, "rb") as fh:
                head = fh.read(16)
            if head and head != b"SQLite format 3\x00":
                raise StudyError(f"storage {url}: {path} is not a SQLite database")
            if head:
                import sqlite3

                try:
                    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
                    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
                    con.close()
                except sqlite3.DatabaseError as exc:
                    raise StudyError(f"storage {url}: {path} is not a readable SQLite database ({exc})") from exc
                if tables and "studies" not in tables:
                    raise StudyError(f"storage {url}: {path} is a SQLite database but not an Optuna storage")
        elif must_exist:
            raise StudyError(f"storage {url}: {path} does not exist (run `weight-tuner tune` first)")
    elif "://" not in url:
        raise StudyError(f"storage {url!r} is not a database URL (e.g. sqlite:///studies/x.db, postgresql://...)")


def open_storage(url: str, *, must_exist: bool = False, heartbeat: int = 0) -> optuna.storages.RDBStorage:
    """An RDB storage with heartbeats, so a killed worker's trial is failed and retried.

    ``heartbeat`` is the interval in seconds (0: none, for read-only use); a trial
    silent for three intervals is failed and retried with the same parameters.
    With ``must_exist``, a SQLite file that does not exist is an error instead of
    being created. A file that is not an Optuna database is an error, not modified.
    """
    check_storage(url, must_exist=must_exist)
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    kwargs: dict[str, Any] = {}
    if heartbeat:
        kwargs = {"heartbeat_interval": heartbeat, "grace_period": 3 * heartbeat,
                  "heartbeat_stale_trial_callback": optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=2)}
    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **kwargs)
    except Exception as exc:  # sqlalchemy raises many types; all mean "unusable storage"
        raise StudyError(f"storage {url}: cannot open ({type(exc).__name__}: {str(exc).splitlines()[0]})") from exc


def study_names(storage) -> list[str]:
    """Names of the studies in a storage."""
    return sorted(s.study_name for s in optuna.study.get_all_study_summaries(storage, include_best_trial=False))


def load_existing_study(storage_url: str, name: str, **kwargs) -> optuna.Study:
    """Load a study that must exist; the error lists the studies that do."""
    storage = open_storage(storage_url, must_exist=True, heartbeat=kwargs.pop("heartbeat", 0))
    names = study_names(storage)
    if name not in names:
        listing = ", ".join(names) if names else "none"
        raise StudyError(f"study {name!r} not found in {storage_url}; existing studies: {listing}")
    return optuna.load_study(study_name=name, storage=storage, **kwargs)


def artifacts_dir(storage_url: str, study_name: str) -> Path:
    """Where plots and models of a study live: beside the SQLite file, else under studies/."""
    if storage_url.startswith("sqlite:///"):
        return Path(storage_url[len("sqlite:///"):]).parent / study_name
    return Path("studies") / study_name


def library_versions() -> dict[str, str]:
    import keras
    import pandas
    import sklearn
    import tensorflow

    return {"python": platform.python_version(), "optuna": optuna.__version__, "keras": keras.__version__,
            "tensorflow": tensorflow.__version__, "numpy": np.__version__, "pandas": pandas.__version__,
            "scikit-learn": sklearn.__version__}


# --------------------------------------------------------------------------- trials

def metrics_markdown(stats: dict, weights: dict, scheme: str) -> str:
    """Per-class metrics as a Markdown table (the dashboard note of a trial)."""
    rows = [f"**scheme**: `{scheme}`  ",
            "**class weights**: " + ", ".join(f"{c} {weights[c]:.4g}" for c in CLASSES), "",
            "| class | precision | recall | F1 | support | loss |", "|---|---|---|---|---|---|"]
    for c in CLASSES:
        rows.append(f"| {c} | {stats[f'{c}_precision']:.4f} | {stats[f'{c}_recall']:.4f} | {stats[f'{c}_f1']:.4f} "
                    f"| {stats[f'{c}_support']} | {stats[f'{c}_loss']:.4f} |")
    rows += ["", f"**important_f1** (validation): {stats['important_f1']:.4f}, accuracy {stats['accuracy']:.4f}"]
    return "\n".join(rows)


def model_path(models_dir: Path, number: int) -> Path:
    return models_dir / f"trial-{number}.keras"


class Objective:
    """One trial: sample weights, train, report each epoch, store every metric on the trial."""

    def __init__(self, prepared, space: SearchSpace, base_config: dict, models_dir: Path | None, log=None,
                 trial_timeout: float | None = None, n_trials: int | None = None,
                 objectives: list[str] | None = None, evaluation: dict | None = None, stop=None):
        self.objectives = objectives or ["important_f1"]
        self.stop = stop  # a signals.StopGuard: checked between training batches
        self._should_stop = stop.check if stop is not None else None
        self._given_back: set[int] = set()
        self.evaluation = evaluation or dict(DEFAULT_EVALUATION)
        self.trial_timeout = trial_timeout
        self.n_trials = n_trials
        self.prepared = prepared
        self.space = space
        self.base_config = base_config
        self.models_dir = models_dir
        self.log = log or (lambda msg: print(msg, file=sys.stderr))

    def __call__(self, trial: optuna.Trial) -> float:
        from .config import validate_class_weights
        from .train import NonFiniteLossError, train_model, trained_weights

        config = self.space.suggest(trial, self.base_config)  # an enqueued trial gets its fixed params here
        self._check_surplus(trial)
        given = trial.user_attrs.get("weights_given")
        if given is not None:  # a named scheme trains with its weights exactly as the guide gives them
            config["class_weights"] = validate_class_weights(given, "weights_given")
        if "scheme" not in trial.user_attrs:
            trial.set_user_attr("scheme", "search")
        trial.set_user_attr("class_weights", config["class_weights"])
        trial.set_user_attr("class_weights_trained", trained_weights(self.prepared, config))
        if self.stop is not None:
            self.stop.abandon = lambda: self._abandon(trial)
        if self.evaluation["design"] == "cv":
            return self._cross_validated(trial, config)
        epochs_run = 0
        t0 = time.perf_counter()

        def report(epoch: int, stats: dict) -> None:
            nonlocal epochs_run
            epochs_run = epoch + 1
            if len(self.objectives) == 1:  # Optuna prunes single-objective studies only
                trial.report(stats[OBJECTIVES[self.objectives[0]]], epochs_run)
            elapsed = time.perf_counter() - t0
            if self.trial_timeout is not None and elapsed > self.trial_timeout and epochs_run < config["epochs"]:
                raise TrialTimeoutError(f"trial ran {elapsed:.1f}s, over --trial-timeout {self.trial_timeout:g}s, "
                                        f"after epoch {epochs_run}")
            if len(self.objectives) == 1 and trial.should_prune():
                raise optuna.TrialPruned(f"pruned after epoch {epochs_run}: "
                                         f"val important_f1 {stats['important_f1']:.4f}")

        try:
            model, history = train_model(self.prepared, config, report, log=self.log, should_stop=self._should_stop)
        except optuna.TrialPruned as exc:
            trial.set_user_attr("pruned_reason", str(exc))
            raise
        except (NonFiniteLossError, TrialTimeoutError) as exc:
            trial.set_user_attr("fail_reason", str(exc))
            raise
        except KeyboardInterrupt as exc:
            trial.set_user_attr("fail_reason", f"interrupted ({type(exc).__name__})")
            self._give_back(trial)  # the next run retries these parameters
            raise
        finally:
            trial.set_user_attr("epochs_run", epochs_run)
            trial.set_user_attr("seconds", round(time.perf_counter() - t0, 3))
        stats = history[-1]["val"]
        for key, value in stats.items():
            trial.set_user_attr(f"val_{key}", value)
        try:
            import optuna_dashboard

            optuna_dashboard.save_note(trial, metrics_markdown(stats, config["class_weights"],
                                                               trial.user_attrs["scheme"]))
        except Exception as exc:  # a note is a convenience; never lose a trial over it
            self.log(f"warning: could not save the dashboard note: {exc}")
        self._keep_model(trial, model, config, stats["important_f1"])
        values = [stats[OBJECTIVES[o]] for o in self.objectives]
        return values[0] if len(values) == 1 else tuple(values)

    def _cross_validated(self, trial: optuna.Trial, config: dict) -> float:
        """The cv design: score the trial on every unit, in an order shuffled per trial, reporting each.

        ``trial.report(value, step=unit index)`` feeds Optuna's WilcoxonPruner, which compares the
        trial paired with the best one; when it prunes, the mean so far is returned (as its docs
        advise, so the sampler still learns) and ``pruned_at_unit`` is recorded.
        """
        from .units import UNIT_KEYS, make_units, run_unit, unit_data

        units = make_units(self.evaluation["folds"], self.evaluation["repeats"])
        order = np.random.default_rng([trial.number, 17]).permutation(len(units))
        t0 = time.perf_counter()
        scores: dict[str, dict] = {}
        try:
            for i in order:
                unit = units[int(i)]
                res = run_unit(unit_data(self.prepared, unit, self.evaluation["folds"]), config, unit,
                               should_stop=self._should_stop)
                scores[unit.key] = res["scores"]
                trial.set_user_attr("unit_scores", scores)
                trial.report(res["scores"]["important_f1"], step=int(i))
                if self.trial_timeout is not None and time.perf_counter() - t0 > self.trial_timeout:
                    raise TrialTimeoutError(f"trial ran {time.perf_counter() - t0:.1f}s, over --trial-timeout "
                                            f"{self.trial_timeout:g}s, after {len(scores)} units")
                if len(scores) < len(units) and trial.should_prune():
                    trial.set_user_attr("pruned_at_unit", len(scores))
                    break
        except KeyboardInterrupt as exc:
            trial.set_user_attr("fail_reason", f"interrupted ({type(exc).__name__})")
            self._give_back(trial)
            raise
        except TrialTimeoutError as exc:
            trial.set_user_attr("fail_reason", str(exc))
            raise
        finally:
            trial.set_user_attr("seconds", round(time.perf_counter() - t0, 3))
        value = float(np.mean([v["important_f1"] for v in scores.values()]))
        for key in UNIT_KEYS:
            trial.set_user_attr(f"val_{key}", float(np.mean([v[key] for v in scores.values()])))
        trial.set_user_attr("units_run", len(scores))
        return value

    def _check_surplus(self, trial: optuna.Trial) -> None:
        """Give the trial back if finished and running trials numbered before it already reach the total."""
        if self.n_trials is None:
            return
        ahead = [t for t in trial.study.get_trials(deepcopy=False, states=FINISHED + (TrialState.RUNNING,))
                 if t.number < trial.number]
        if len(ahead) < self.n_trials:
            return
        trial.set_user_attr("surplus", True)
        self._give_back(trial)
        raise SurplusTrial(f"surplus: {len(ahead)} trials were already finished or running")

    def _abandon(self, trial: optuna.Trial) -> None:
        """A second Ctrl-C: fail the running trial (and re-queue it) before the process exits.

        The signal may have interrupted the study's own storage calls, even inside a write, so a
        fresh connection tries for a second; if the database is locked (by this very process), a
        detached helper does it as soon as this process is gone and its lock released.
        """
        import subprocess

        url = getattr(trial.study._storage, "_backend", trial.study._storage).url
        try:
            fail_abandoned_trial(url, trial.study.study_name, trial._trial_id, lock_timeout=1.0)
        except Exception:
            subprocess.Popen([sys.executable, "-m", "weight_tuner.signals", url, trial.study.study_name,
                              str(trial._trial_id), str(os.getpid())], start_new_session=True,
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def _give_back(self, trial: optuna.Trial) -> None:
        """Re-enqueue a trial that will not finish, so its parameters (an enqueued scheme too) are not lost."""
        if trial.number in self._given_back:
            return
        self._given_back.add(trial.number)
        requeue(trial.study, trial)  # already suggested: an enqueued trial's fixed params

    def _keep_model(self, trial: optuna.Trial, model, config: dict, value: float) -> None:
        """Save this trial's model if it is the best so far or the unweighted baseline; drop superseded ones."""
        if self.models_dir is None:
            return
        from .train import bundle_paths, save_bundle

        done = trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        # Strictly better: on a tie the earlier trial stays best, as max() over trials in order picks it.
        is_best = value > max((trial_score(t) for t in done), default=-math.inf)
        is_unweighted = trial.user_attrs.get("scheme") == "unweighted"
        if is_best or is_unweighted:
            save_bundle(model, self.prepared.featurizer, config, model_path(self.models_dir, trial.number),
                        self.prepared.label_map)
        if not is_best:
            return
        keep = {t.number for t in done if t.user_attrs.get("scheme") == "unweighted"}
        for t in done:  # the previous best is superseded
            if t.number not in keep:
                for p in bundle_paths(model_path(self.models_dir, t.number)):
                    p.unlink(missing_ok=True)


# --------------------------------------------------------------------------- the job

def create_or_resume(storage_url: str, study_name: str, prepared, study_config: StudyConfig,
                     base_config: dict, seed: int = 0, log=None, heartbeat: int = 10) -> tuple[optuna.Study, bool]:
    """Create the study (storing provenance and enqueuing every scheme once) or resume it.

    The sampler is re-seeded with the number of trials already in the study, so a
    resumed run never replays the parameters of the first run.
    """
    log = log or (lambda msg: print(msg, file=sys.stderr))
    storage = open_storage(storage_url, heartbeat=heartbeat)
    pruner = study_config.make_pruner()
    try:
        # Creation is atomic in the database: of two racing `tune` commands only one creates
        # the study, and only that one enqueues the schemes.
        study = optuna.create_study(storage=storage, study_name=study_name,
                                    directions=["maximize"] * len(study_config.objectives),
                                    sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=10), pruner=pruner)
        created = True
    except optuna.exceptions.DuplicatedStudyError:
        n_before = len(storage.get_all_trials(storage.get_study_id_from_name(study_name), deepcopy=False))
        study = optuna.load_study(study_name=study_name, storage=storage, pruner=pruner,
                                  sampler=optuna.samplers.TPESampler(seed=seed + n_before, n_startup_trials=10))
        created = False
    space = study_config.space
    evaluation = study_config.evaluation
    if created:
        study.set_metric_names([f"val_{o}" for o in study_config.objectives])
        study.set_user_attr("objectives", study_config.objectives)
        meta = prepared.meta()
        for key in ("source", "data_fingerprint", "class_counts", "split", "n_features", "label_map"):
            study.set_user_attr(key, meta[key])
        study.set_user_attr("model_config", base_config)
        study.set_user_attr("search_space", space.to_dict())
        study.set_user_attr("pruner", study_config.pruner)
        study.set_user_attr("library_versions", library_versions())
        study.set_user_attr("seed", seed)
        study.set_user_attr("evaluation", evaluation)
        schemes = warm_start_schemes(prepared.class_counts["train"])
        if study_config.schemes is not None:
            study_config.check_schemes()
            schemes = {k: v for k, v in schemes.items() if k in study_config.schemes}
        groups = group_schemes(schemes, prepared.class_counts["train"])
        for names in groups:
            weights = schemes[names[0]]
            study.enqueue_trial(space.params_for(weights),
                                user_attrs={"scheme": names[0], "schemes": names, "weights_given": weights})
        log(f"created study {study_name!r} in {storage_url}; enqueued {len(groups)} baseline schemes "
            f"({len(schemes)} named, the same weight ratios once)")
    else:
        attrs = study.user_attrs
        if attrs.get("data_fingerprint") not in (None, prepared.fingerprint):
            raise StudyError(f"study {study_name!r} was run on data {attrs['data_fingerprint']} "
                             f"({attrs.get('source')}); this data is {prepared.fingerprint}. Use a new --study name.")
        if attrs.get("search_space") not in (None, space.to_dict()):
            raise StudyError(f"study {study_name!r} was created with search space {attrs['search_space']}; "
                             "this config differs. Use a new --study name.")
        if attrs.get("objectives", ["important_f1"]) != study_config.objectives:
            raise StudyError(f"study {study_name!r} optimises {attrs.get('objectives')}; this run asks for "
                             f"{study_config.objectives}. Use a new --study name.")
        if attrs.get("evaluation", evaluation) != evaluation:
            raise StudyError(f"study {study_name!r} was created with evaluation {attrs['evaluation']}; this run "
                             f"asks for {evaluation} (--design/--folds/--repeats/--confirm-top). Use a new --study name.")
        if attrs.get("model_config") not in (None, base_config):
            raise StudyError(f"study {study_name!r} was created with model config {attrs['model_config']}; "
                             "this config differs. Use a new --study name.")
        log(f"resuming study {study_name!r}: {len(study.trials)} trials so far")
    return study, created


# What a re-queued trial keeps, so that a retried scheme is still that scheme.
RETRY_ATTRS = ("scheme", "schemes", "weights_given")


def requeue(study: optuna.Study, trial) -> None:
    """Enqueue ``trial``'s parameters again (a live or a frozen trial), marked ``retry_of`` its number."""
    if trial.params:
        attrs = {k: v for k, v in trial.user_attrs.items() if k in RETRY_ATTRS}
        study.enqueue_trial(trial.params, user_attrs=dict(attrs, retry_of=trial.number))


def fail_abandoned_trial(url: str, study_name: str, trial_id: int, lock_timeout: float = 60.0) -> None:
    """Mark a trial left RUNNING by an exiting process FAIL, and queue its parameters once."""
    engine_kwargs = {"connect_args": {"timeout": lock_timeout}} if url.startswith("sqlite") else None
    storage = optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, skip_compatibility_check=True)
    trial = storage.get_trial(trial_id)
    if trial.state != TrialState.RUNNING:
        return
    study = optuna.load_study(study_name=study_name, storage=storage)
    queued = any(t.user_attrs.get("retry_of") == trial.number for t in study.get_trials(
        deepcopy=False, states=(TrialState.WAITING,)))
    if not queued:
        requeue(study, trial)
    storage.set_trial_user_attr(trial_id, "fail_reason", "interrupted twice: the process exited at once")
    storage.set_trial_state_values(trial_id, TrialState.FAIL)


def finished_count(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def tune(prepared, storage_url: str, study_name: str, n_trials: int, study_config: StudyConfig,
         seed: int = 0, log=None, pruner: optuna.pruners.BasePruner | None = None,
         trial_timeout: float | None = None, heartbeat: int = 10, stop=None) -> optuna.Study:
    """Create or resume the study, then run it to ``n_trials`` finished (complete or pruned) trials in total.

    ``stop``: the command's :class:`.signals.StopGuard`, so that Ctrl-C stops a trial between batches.
    """
    log = log or _tqdm_log
    base_config = validate_config(study_config.model)
    study, _ = create_or_resume(storage_url, study_name, prepared, study_config, base_config, seed, log, heartbeat)
    if pruner is not None:
        study.pruner = pruner
    run_trials(study, prepared, storage_url, n_trials, study_config.space, base_config, log, trial_timeout,
               stop=stop)
    return study


def join_study(prepared, storage_url: str, study_name: str, n_trials: int, seed: int = 0, log=None,
               trial_timeout: float | None = None, heartbeat: int = 10, stop=None) -> optuna.Study:
    """A worker: join a study that ``tune`` created, with the study's own space and model config.

    Workers never enqueue anything; the study's creator did that once.
    """
    log = log or _tqdm_log
    probe = load_existing_study(storage_url, study_name)
    attrs = probe.user_attrs
    if "search_space" not in attrs or "model_config" not in attrs:
        raise StudyError(f"study {study_name!r} was not created by `weight-tuner tune`; start it with tune first")
    if attrs.get("data_fingerprint") != prepared.fingerprint:
        raise StudyError(f"study {study_name!r} was run on data {attrs.get('data_fingerprint')} "
                         f"({attrs.get('source')}); this worker's data is {prepared.fingerprint}")
    space = SearchSpace.from_dict(attrs["search_space"])
    pruner_cfg = attrs.get("pruner") or StudyConfig().pruner
    # Distinct per worker, so that workers started together do not sample alike.
    sampler = optuna.samplers.TPESampler(seed=seed + len(probe.trials) + os.getpid(), n_startup_trials=10)
    study = optuna.load_study(study_name=study_name, storage=open_storage(storage_url, heartbeat=heartbeat),
                              sampler=sampler,
                              pruner=StudyConfig(pruner=pruner_cfg).make_pruner())
    run_trials(study, prepared, storage_url, n_trials, space, validate_config(attrs["model_config"]), log,
               trial_timeout, stop=stop)
    return study


def _tqdm_log(msg: str) -> None:
    from tqdm import tqdm

    tqdm.write(msg, file=sys.stderr)


class SurplusTrial(Exception):
    """Another worker already holds the last of the requested trials."""


def run_trials(study: optuna.Study, prepared, storage_url: str, n_trials: int, space: SearchSpace,
               base_config: dict, log, trial_timeout: float | None = None, poll_seconds: float = 5.0,
               max_failures: int = 5, stop=None) -> None:
    """Run trials one at a time until the study holds exactly ``n_trials`` finished trials.

    Before each trial the finished and running trials of every worker are counted,
    so several workers together stop at the total; a trial that finds itself
    beyond the total (a race between workers) gives its parameters back.
    """
    from tqdm import tqdm

    from .train import NonFiniteLossError

    models_dir = artifacts_dir(storage_url, study.study_name) / "models"
    objectives = study.user_attrs.get("objectives", ["important_f1"])
    objective = Objective(prepared, space, base_config, models_dir, log, trial_timeout, n_trials, objectives,
                          study.user_attrs.get("evaluation"), stop)
    done = finished_count(study)
    if done >= n_trials:
        log(f"study {study.study_name!r} already has {done} finished trials (--trials {n_trials}); nothing to run")
        return
    bar = tqdm(total=n_trials, initial=done, desc=f"study {study.study_name}", unit="trial", file=sys.stderr)
    failures = 0
    ran: list[optuna.trial.FrozenTrial] = []  # this process's trials, in order

    def after_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        ran.append(trial)
        if stop is not None:
            stop.abandon = None  # the trial is told: nothing is left RUNNING
        bar.n = min(finished_count(study), n_trials)
        bar.refresh()
        value = "-" if not trial.values else "/".join(f"{v:.4f}" for v in trial.values)
        weights = trial.user_attrs.get("class_weights") or {}
        reason = trial.user_attrs.get("fail_reason", "")
        log(f"trial {trial.number} {trial.state.name.lower()} {trial.user_attrs.get('scheme', '')} "
            f"weights {', '.join(f'{c[:4]} {weights[c]:.3g}' for c in weights)} -> {METRIC_NAME} {value} {reason}")

    guard = stop.safe_points() if stop is not None else contextlib.nullcontext()
    try:
        with guard:
            while True:
                if stop is not None:
                    stop.check()
                finished = finished_count(study)
                if finished >= n_trials:
                    break
                running = len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
                if finished + running >= n_trials:
                    # The other workers hold the remaining trials; one may still die and be retried.
                    optuna.storages.fail_stale_trials(study)
                    time.sleep(poll_seconds)
                    continue
                study.optimize(objective, n_trials=1, gc_after_trial=True, callbacks=[after_trial],
                               catch=(NonFiniteLossError, TrialTimeoutError, SurplusTrial))
                last = ran[-1] if ran else None
                if last is not None and last.state == TrialState.FAIL and "surplus" not in last.user_attrs:
                    failures += 1
                    if failures >= max_failures:
                        raise StudyError(f"{failures} trials failed in a row; last reason: "
                                         f"{last.user_attrs.get('fail_reason', 'see the log')}")
                else:
                    failures = 0
    finally:
        bar.close()


def completed_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The study's completed trials; a clear error if there are none yet."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        raise StudyError(f"study {study.study_name!r} has no completed trial yet ({len(study.trials)} trials in "
                         "all); run `weight-tuner tune` first")
    return complete


def recommended_model(storage_url: str, study_name: str) -> tuple[Path, dict | None]:
    """The saved model a study recommends, and the post-hoc multipliers to apply (``None``: plain argmax).

    With a recommendation that is the recommended weights' model or, for no weights and thresholds,
    the unweighted model; a study without one (confirmation not run yet) falls back to its best trial.
    """
    study = load_existing_study(storage_url, study_name)
    complete = completed_trials(study)
    rec = study.user_attrs.get("recommendation")
    number = rec["trial"] if rec and rec.get("trial") is not None else max(complete, key=trial_score).number
    multipliers = rec.get("multipliers") if rec and rec["decision"] == "thresholds" else None
    path = model_path(artifacts_dir(storage_url, study_name) / "models", number)
    if not path.exists():
        raise StudyError(f"the model of trial {number} is not at {path} (models are kept on the machine that ran "
                         "the study); use weight-tuner train --save-model with the exported weights")
    return path, multipliers


def trial_score(trial) -> float:
    """Validation important_f1 of a finished trial: the value, or the stored metric in multi-objective mode."""
    return trial.user_attrs.get("val_important_f1", trial.value if trial.values and len(trial.values) == 1 else -1.0)


def trial_config(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> dict:
    """The full model config a finished trial trained with, re-derived from its params."""
    space = SearchSpace.from_dict(study.user_attrs["search_space"])
    config = space.suggest(optuna.trial.FixedTrial(trial.params), study.user_attrs["model_config"])
    config["class_weights"] = trial.user_attrs.get("class_weights", config["class_weights"])
    return validate_config(config)
