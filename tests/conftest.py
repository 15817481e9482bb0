"""Shared fixtures: the tiny sample corpus, prepared once, and a tiny model config."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
# One TensorFlow thread per process: the 2 xdist workers, and the subprocesses some tests start, already
# fill the 2 cores; more threads per tiny model only contend (inherited by the subprocesses).
for _var in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
# `tune` in one process unless a test asks for --jobs: the two xdist workers already fill the cores.
os.environ.setdefault("WEIGHT_TUNER_JOBS", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from weight_tuner.config import validate_config  # noqa: E402

SKOL_CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "skol-corpus"
TINY_DOCS = 40
# A study's model in tests: two epochs of a tiny BiLSTM (the study tests need trials, not accuracy).
TINY_MODEL = {"hidden_size": 8, "num_layers": 1, "epochs": 2, "batch_size": 16, "window_size": 10,
              "prediction_stride": 5, "learning_rate": 0.01, "verbosity": 0}


# Seconds each file's tests took (junit, 2026-11-30). xdist hands out whole files (--dist loadfile) in
# collection order; with the longest first, the short ones fill in at the end instead of one worker
# finishing a 3-minute file alone (9 min 14 s in test-count order).
FILE_SECONDS = {"test_workers.py": 200, "test_scale_out.py": 192, "test_recommend.py": 174, "test_reliability.py": 158, "test_posthoc.py": 61,
                "test_study.py": 59, "test_deployed.py": 57, "test_model.py": 48, "test_views.py": 37,
                "test_commands.py": 35, "test_predict.py": 33, "test_group_split.py": 18, "test_corpus.py": 12,
                "test_cli_train.py": 11, "test_racing.py": 8, "test_integrity.py": 30, "test_secrets.py": 31}


def pytest_collection_modifyitems(config, items):
    """Longest files first (a stable sort: the tests of a file keep their order)."""
    items.sort(key=lambda item: -FILE_SECONDS.get(item.path.name, 0))


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
