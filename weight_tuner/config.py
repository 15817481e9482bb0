"""Model configuration: the SKOL guide's keys, their defaults and validation.

Every way a config can be wrong raises :class:`ConfigError` with a one-line
message naming the key or value, before anything is trained.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from .errors import ConfigError
from .paths import parse_json, read_json

CLASSES: tuple[str, ...] = ("Nomenclature", "Description", "Misc")
"""The three classes, in the order of the model's output units."""


# The guide's keys, plus learning_rate, seed and our own train_stride, input_projection and
# oversample (all documented in README.md).
@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """A validated model config: the guide's keys (plus ours, see :data:`DEFAULT_CONFIG`), fixed once made.

    Keyword arguments only, each validated however the config is made (the constructor too, as Optuna's
    pruners validate theirs); :meth:`from_dict` (or :meth:`of`) also names an unknown key; :meth:`replace`
    validates the changed copy. :meth:`as_dict` is the pasteable SKOL ``model_config`` and what studies, bundles and
    exports store.
    """

    model_type: str = "rnn"
    window_size: int = 15
    prediction_stride: int = 5
    train_stride: int | None = None  # None: window_size, i.e. non-overlapping training windows
    input_projection: int = 0  # >0: a per-line Dense layer of this width before the LSTMs (faster on CPU)
    hidden_size: int = 128
    num_layers: int = 2
    dropout: float = 0.3
    epochs: int = 6
    batch_size: int = 32
    learning_rate: float = 1e-3
    verbosity: int = 1
    seed: int = 0
    oversample: int = 1  # >1: repeat the training windows of documents with Nomenclature this many times
    class_weights: Mapping[str, float] | None = None  # None: plain (unweighted) cross-entropy

    def __post_init__(self) -> None:
        own = {k: v for k, v in self.as_dict().items() if k in DEFAULT_CONFIG}  # a subclass's keys are its own
        for key, value in validate_config(own).items():  # normalised: floats, weights in class order
            object.__setattr__(self, key, value)

    @classmethod
    def from_dict(cls, config: Mapping[str, Any] | None = None) -> "ModelConfig":
        """``config`` over the defaults, every key validated (:func:`validate_config`)."""
        return cls(**validate_config(config))

    @classmethod
    def of(cls, config: "ModelConfig | Mapping[str, Any] | None") -> "ModelConfig":
        """``config`` as a :class:`ModelConfig` (one is returned as it is; a mapping is validated)."""
        return config if isinstance(config, ModelConfig) else cls.from_dict(config)

    def as_dict(self) -> dict[str, Any]:
        """The config as a plain dict in :data:`DEFAULT_CONFIG`'s key order: what a SKOL ``model_config`` holds."""
        return {f.name: (dict(v) if isinstance(v := getattr(self, f.name), Mapping) else v)
                for f in dataclasses.fields(self)}

    def replace(self, **changes: Any) -> "ModelConfig":
        """A validated copy with ``changes``."""
        return ModelConfig.from_dict({**self.as_dict(), **changes})

    @property
    def build_key(self) -> tuple:
        """What a built and compiled model depends on: every field outside :data:`RUN_KEYS`, sorted."""
        return build_key(self.as_dict())

    @property
    def stride(self) -> int:
        """The stride between training windows."""
        return self.train_stride or self.window_size


DEFAULT_CONFIG: dict[str, Any] = {f.name: f.default for f in dataclasses.fields(ModelConfig)}
"""The defaults of every key, in order."""

# Keys that never change the model a config builds (how it is trained, fed and logged). Every other
# key is part of the build key (:func:`build_key`), so a key added later rebuilds rather than reuses.
RUN_KEYS = frozenset({"window_size", "prediction_stride", "train_stride", "epochs", "batch_size", "verbosity",
                      "oversample", "class_weights"})


def build_key(config: Mapping[str, Any]) -> tuple:
    """What a built and compiled model depends on: every config key outside :data:`RUN_KEYS`, sorted."""
    return tuple((k, config[k]) for k in sorted(config) if k not in RUN_KEYS)


_INT_KEYS = {
    "window_size": 1,
    "prediction_stride": 1,
    "hidden_size": 1,
    "num_layers": 1,
    "epochs": 1,
    "batch_size": 1,
    "verbosity": 0,
    "seed": 0,
    "input_projection": 0,
    "oversample": 1,
}


def validate_class_weights(weights: Any, where: str = "class_weights") -> dict[str, float] | None:
    """Check a class-weight mapping and return it as ``{class: float}`` in class order.

    ``None`` means unweighted. Keys must be exactly :data:`CLASSES`: SKOL keyed a
    weight "Misc" while its label was "Misc-exposition" and the weight was
    silently dropped, so an unknown or missing key is an error here.
    """
    if weights is None:
        return None
    if not isinstance(weights, Mapping):
        raise ConfigError(f"{where}: expected an object mapping class to weight, got {weights!r}")
    for key in weights:
        if key not in CLASSES:
            raise ConfigError(
                f"{where}: {key!r} is not a class; the classes are {', '.join(CLASSES)}"
            )
    for cls in CLASSES:
        if cls not in weights:
            raise ConfigError(f"{where}: missing a weight for class {cls!r}")
    out: dict[str, float] = {}
    for cls in CLASSES:
        value = weights[cls]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}[{cls!r}]: weight must be a number, got {value!r}")
        value = float(value)
        if not math.isfinite(value) or value <= 0:
            raise ConfigError(f"{where}[{cls!r}]: weight must be finite and > 0, got {value!r}")
        out[cls] = value
    return out


def validate_config(config: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Merge ``config`` over :data:`DEFAULT_CONFIG` and validate every key."""
    merged = dict(DEFAULT_CONFIG)
    for key, value in (config or {}).items():
        if key not in DEFAULT_CONFIG:
            raise ConfigError(
                f"unknown config key {key!r}; known keys: {', '.join(sorted(DEFAULT_CONFIG))}"
            )
        merged[key] = value
    if merged["model_type"] not in ("rnn", "bilstm"):
        raise ConfigError(f"model_type: only 'rnn' (BiLSTM) is supported, got {merged['model_type']!r}")
    for key, low in _INT_KEYS.items():
        value = merged[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"{key}: expected an integer >= {low}, got {value!r}")
    if merged["train_stride"] is not None:
        ts = merged["train_stride"]
        if isinstance(ts, bool) or not isinstance(ts, int) or ts < 1:
            raise ConfigError(f"train_stride: expected an integer >= 1 or null, got {ts!r}")
    if merged["prediction_stride"] > merged["window_size"]:
        raise ConfigError(
            f"prediction_stride ({merged['prediction_stride']}) must not exceed "
            f"window_size ({merged['window_size']}): lines would go unscored"
        )
    dropout = merged["dropout"]
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise ConfigError(f"dropout: expected a number in [0, 1), got {dropout!r}")
    lr = merged["learning_rate"]
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not (math.isfinite(lr) and lr > 0):
        raise ConfigError(f"learning_rate: expected a finite number > 0, got {lr!r}")
    merged["dropout"] = float(dropout)
    merged["learning_rate"] = float(lr)
    merged["class_weights"] = validate_class_weights(merged["class_weights"])
    return merged


def load_config(path: str | Path | None, weights: str | None = None) -> ModelConfig:
    """Build a validated config from an optional JSON file and optional weights.

    ``weights`` is either inline JSON or a path to a JSON file; it may be a bare
    ``{class: weight}`` mapping or an export file holding ``class_weights``.
    """
    raw: dict[str, Any] = {}
    if path is not None:
        loaded = read_json(path, "config")
        if not isinstance(loaded, dict):
            raise ConfigError(f"config {path}: expected a JSON object")
        model = loaded["model_config"] if "model_config" in loaded else loaded
        if not isinstance(model, dict):
            raise ConfigError(f"config {path}: model_config must be a JSON object, got {model!r}")
        raw.update(model)
    if weights is not None:
        text = weights.strip()
        if text == "null":  # no class weights, as an export recommends when weighting did not help
            parsed = None
        elif text[:1] in "{[":  # inline JSON; a list is read so that the error can say what is wrong
            parsed = parse_json(text, "--weights")
        else:
            parsed = read_json(text, "weights file")
        if isinstance(parsed, dict) and "class_weights" in parsed:
            parsed = parsed["class_weights"]
        elif not isinstance(parsed, dict) and parsed is not None:
            raise ConfigError(f"--weights: expected an object of class -> weight, inline or in a JSON file, or null; "
                              f"got {weights!r}")
        raw["class_weights"] = parsed
    return ModelConfig.from_dict(raw)
