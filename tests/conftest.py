"""Shared fixtures: the tiny sample corpus, prepared once, and a tiny model config."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from weight_tuner.config import validate_config  # noqa: E402

SKOL_CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "skol-corpus"
TINY_DOCS = 40
# A study's model in tests: two epochs of a tiny BiLSTM (the study tests need trials, not accuracy).
TINY_MODEL = {"hidden_size": 8, "num_layers": 1, "epochs": 2, "batch_size": 16, "window_size": 10,
              "prediction_stride": 5, "learning_rate": 0.01, "verbosity": 0}


def tiny_config(**overrides):
    """A model small and quick enough for tests, still able to learn the sample corpus."""
    base = {"hidden_size": 12, "num_layers": 1, "epochs": 6, "batch_size": 8, "window_size": 10,
            "prediction_stride": 5, "dropout": 0.0, "learning_rate": 0.01, "verbosity": 0, "seed": 1}
    base.update(overrides)
    return validate_config(base)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("feature-cache")


@pytest.fixture(scope="session")
def prepared(cache_dir):
    from weight_tuner.train import prepare

    return prepare(None, sample_docs=TINY_DOCS, cache_dir=cache_dir)
