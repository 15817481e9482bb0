"""The search space: what a study samples (:class:`SearchSpace`), how it is configured (:class:`StudyConfig`,
the TOML file: space, model, pruner, schemes, evaluation) and the pruner it makes. The named weight
schemes it starts from are :mod:`.schemes`'s."""

from __future__ import annotations

import math
import tomllib
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import optuna

from .config import CLASSES, ModelConfig, validate_config
from .errors import ConfigError
from .folds import UNITS_BY
from .paths import read_json
from .schemes import GUIDE_SCHEMES, UNWEIGHTED, count_schemes

METRIC_NAME = "val_important_f1"
SPACE_VERSION = 1

# A small model so that `make tune` on the sample corpus finishes in minutes on 2 cores.
QUICK_MODEL = {"input_projection": 64, "hidden_size": 32, "num_layers": 1, "epochs": 6, "batch_size": 32,
               "learning_rate": 0.003, "verbosity": 0}


# Arguments a [pruner] table's type starts from (Optuna's own defaults otherwise).
PRUNER_DEFAULTS = {"median": {"n_startup_trials": 5, "n_warmup_steps": 3}}

# How candidates are evaluated (see confirm/statistics.py and confirm/confirmation.py): search on one split, then confirm the top
# candidates on folds x repeats units ("confirm"), or score every trial on the units with
# Wilcoxon pruning and then confirm on fresh units ("cv").
DESIGNS = ("confirm", "cv")
DEFAULT_EVALUATION = {"design": "confirm", "folds": 3, "repeats": 2, "top": 3, "units_by": "chunk"}


def stored_evaluation(made: dict | None) -> dict | None:
    """A study's stored evaluation settings, as this version names them: a study made before ``units_by``
    existed was confirmed on folds of chunks."""
    return None if made is None else {"units_by": "chunk", **made}


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

    def suggest(self, trial: optuna.Trial, base_config: ModelConfig | dict,
                fixed_weights: dict | None = None) -> ModelConfig:
        """Sample one trial's config: weights for the three classes plus any widened levers.

        With ``fixed_weights`` (a scheme outside the space) no weight parameter is sampled, so the
        trial carries none and stays off the plots of the space.
        """
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Fixed parameter .* is out of range")
            weights = dict(fixed_weights) if fixed_weights else {
                "Nomenclature": trial.suggest_float("w_Nomenclature", *self.nomenclature, log=True),
                "Description": trial.suggest_float("w_Description", *self.description, log=True),
                "Misc": trial.suggest_float("w_Misc", *self.misc, log=True) if self.misc else 1.0,
            }
            base = ModelConfig.of(base_config)
            changes = {"class_weights": weights}
            if self.window_size:
                changes["window_size"] = trial.suggest_categorical("window_size", self.window_size)
                changes["prediction_stride"] = min(base.prediction_stride, changes["window_size"])
            if self.epochs:
                changes["epochs"] = trial.suggest_int("epochs", *self.epochs)
            if self.learning_rate:
                changes["learning_rate"] = trial.suggest_float("learning_rate", *self.learning_rate, log=True)
        return base.replace(**changes)

    def params_for(self, weights: dict[str, float]) -> dict[str, float]:
        """Trial params for a weight vector: ratios to Misc when Misc is fixed."""
        if self.misc:
            return {f"w_{c}": float(weights[c]) for c in CLASSES}
        return {f"w_{c}": float(weights[c]) / float(weights["Misc"]) for c in ("Nomenclature", "Description")}

    def contains(self, params: dict[str, float]) -> bool:
        """Whether weight params lie within the bounds (up to rounding)."""
        bounds = {"w_Nomenclature": self.nomenclature, "w_Description": self.description, "w_Misc": self.misc}
        return all(bounds[k][0] * (1 - 1e-9) <= v <= bounds[k][1] * (1 + 1e-9) for k, v in params.items())


@dataclass
class StudyConfig:
    """A study config file (TOML): ``[space]``, ``[model]`` and ``[pruner]`` tables."""

    space: SearchSpace = field(default_factory=SearchSpace)
    model: dict = field(default_factory=dict)
    # No pruning by default: replayed on unpruned studies (docs/benchmarks.md, "Pruning against noise"), every
    # per-epoch pruner that saved work also pruned trials that finished in the top 3, because a trial's
    # early epochs depend on its weights (low weights start at all-Misc and learn late).
    pruner: dict = field(default_factory=lambda: {"type": "none"})
    schemes: list[str] | None = None  # warm-start schemes to enqueue; None: all of them
    objectives: list[str] = field(default_factory=lambda: ["important_f1"])
    evaluation: dict = field(default_factory=lambda: dict(DEFAULT_EVALUATION))

    def set_evaluation(self, **values) -> None:
        """Override evaluation settings (``design``, ``folds``, ``repeats``, ``top``, ``units_by``), validating them."""
        merged = dict(self.evaluation, **{k: v for k, v in values.items() if v is not None})
        for key in merged:
            if key not in DEFAULT_EVALUATION:
                raise ConfigError(f"evaluation: unknown key {key!r}; known keys: {', '.join(DEFAULT_EVALUATION)}")
        if merged["design"] not in DESIGNS:
            raise ConfigError(f"evaluation.design: unknown {merged['design']!r}; choose from {', '.join(DESIGNS)}")
        if merged["units_by"] not in UNITS_BY:
            raise ConfigError(f"evaluation.units_by: unknown {merged['units_by']!r}; choose from {', '.join(UNITS_BY)}")
        for key, low in (("folds", 2), ("repeats", 1), ("top", 1)):
            value = merged[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"evaluation.{key}: expected an integer >= {low}, got {value!r}")
        if merged["design"] == "cv":
            # Per-unit reports are compared paired against the best trial; per-epoch pruning cannot mix with it.
            if self.pruner.get("type", "median") not in ("none", "wilcoxon"):
                raise ConfigError(f"pruner: the cv design prunes with its own Wilcoxon test on the units; "
                                  f"remove [pruner] type {self.pruner.get('type', 'median')!r} or use design 'confirm'")
            self.pruner = {"type": "wilcoxon", "p_threshold": 0.1, "n_startup_steps": 2}
        self.evaluation = merged

    @classmethod
    def load(cls, path: str | Path | None) -> "StudyConfig":
        """Read a TOML study config, or a JSON model config; ``None`` gives the defaults."""
        if path is None:
            return cls(model=dict(QUICK_MODEL))
        path = Path(path)
        if path.suffix == ".json":
            raw_model = read_json(path, "config")
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
        # A [pruner] table without a type is the median pruner, with the warm-up the replay supports.
        kind = user_pruner.get("type", "median") if user_pruner else cls().pruner["type"]
        pruner = {**PRUNER_DEFAULTS.get(kind, {}), **user_pruner, "type": kind}
        out = cls(SearchSpace.from_dict(raw.get("space", {}), f"study config {path} [space]"), model, pruner,
                  raw.get("schemes"))
        out.set_evaluation(**raw.get("evaluation", {}))
        out.check_schemes()
        out.make_pruner()  # validate now, not after hours of trials
        return out

    def check_schemes(self) -> None:
        """Reject scheme names that do not exist, and a list without ``unweighted``: every decision is paired
        against no weights, and the test check scores no weights' own search model beside it."""
        known = list(GUIDE_SCHEMES) + list(count_schemes({c: 1 for c in CLASSES}))
        for name in self.schemes or []:
            if name not in known:
                raise ConfigError(f"schemes: unknown scheme {name!r}; known: {', '.join(known)}")
        if self.schemes is not None and UNWEIGHTED not in self.schemes:
            raise ConfigError(f"schemes: {UNWEIGHTED!r} must be one of them (every decision is measured against no "
                              "weights); got " + ", ".join(map(repr, self.schemes)))

    def make_pruner(self) -> optuna.pruners.BasePruner:
        """The configured Optuna pruner: none by default (a NopPruner), WilcoxonPruner under the cv design, a
        MedianPruner for a ``[pruner]`` table without a type."""
        kind = self.pruner.get("type", "median")
        kwargs = {k: v for k, v in self.pruner.items() if k != "type"}
        pruners = {"median": optuna.pruners.MedianPruner, "percentile": optuna.pruners.PercentilePruner,
                   "hyperband": optuna.pruners.HyperbandPruner, "none": optuna.pruners.NopPruner,
                   "wilcoxon": optuna.pruners.WilcoxonPruner, "threshold": optuna.pruners.ThresholdPruner}
        if kind not in pruners:
            raise ConfigError(f"pruner.type: unknown {kind!r}; choose from {', '.join(pruners)}")
        try:
            return pruners[kind](**kwargs)
        except (TypeError, ValueError) as exc:  # Optuna checks its arguments with ValueError
            raise ConfigError(f"pruner: {str(exc).splitlines()[0]}") from exc


