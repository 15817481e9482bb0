"""Bundles: a trained model saved with what predicting needs (featurizer, config, label map), each file
written atomically, then a manifest of their sizes and SHA-256 that loading checks first."""

from __future__ import annotations

from pathlib import Path

from . import corpus
from .config import ModelConfig
from .errors import ConfigError, DataError
from .features import Featurizer
from .paths import bundle_paths, check_bundle, current_umask, read_json, write_json, write_manifest


def save_bundle(model, featurizer: Featurizer, config: ModelConfig, model_path: str | Path,
                label_map: dict[str, str] | None = None) -> None:
    """Save model, featurizer, config and label mapping, each atomically, then their manifest (sizes and
    SHA-256), which :func:`load_bundle` checks: a bundle is whole, or refused."""
    import os
    import tempfile

    paths = bundle_paths(model_path)
    paths.keras.parent.mkdir(parents=True, exist_ok=True)
    paths.manifest.unlink(missing_ok=True)  # a crash below leaves no manifest vouching for a mix of files
    fd, tmp = tempfile.mkstemp(dir=paths.keras.parent, prefix=f".{paths.keras.stem}.", suffix=".tmp.keras")
    os.close(fd)
    try:
        model.save(tmp)
        os.chmod(tmp, 0o666 & ~current_umask())  # as the bundle's other files: mkstemp alone gives 0600
        os.replace(tmp, paths.keras)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    featurizer.save(paths.featurizer)
    write_json(paths.config, config.as_dict())
    write_json(paths.labels, label_map or {})
    write_manifest(paths.manifest, [paths.keras, paths.featurizer, paths.config, paths.labels])


def load_bundle(model_path: str | Path):
    """Load ``(model, featurizer, config)`` saved by :func:`save_bundle`, after :func:`check_bundle`."""
    from .model import load_model

    check_bundle(model_path)
    paths = bundle_paths(model_path)
    saved = read_json(paths.config, "model config")
    try:
        config = ModelConfig.from_dict(saved if isinstance(saved, dict) else {"model_config": saved})
    except ConfigError as exc:
        raise ConfigError(f"model config {paths.config}: {exc}") from exc
    return load_model(paths.keras), Featurizer.load(paths.featurizer), config


def load_label_map(model_path: str | Path):
    """The raw-label -> class function a bundle was trained with (the default mapping where the bundle
    records none, as bundles saved before mappings were recorded)."""
    labels_path = bundle_paths(model_path).labels
    mapping = read_json(labels_path, "label map") if labels_path.exists() else {}
    if not isinstance(mapping, dict):
        raise DataError(f"label map {labels_path}: expected a JSON object of raw label -> class")
    return corpus.make_label_map(mapping, where=f"label map {labels_path}")
