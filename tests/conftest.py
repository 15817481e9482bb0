"""Shared fixtures: the tiny sample corpus, prepared once, and a tiny model config."""

import fcntl
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

from weight_tuner.config import ModelConfig  # noqa: E402

SKOL_CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "skol-corpus"
TINY_DOCS = 40
# A study's model in tests: two epochs of a tiny BiLSTM (the study tests need trials, not accuracy).
TINY_MODEL = {"hidden_size": 8, "num_layers": 1, "epochs": 2, "batch_size": 16, "window_size": 10,
              "prediction_stride": 5, "learning_rate": 0.01, "verbosity": 0}


# xdist hands out whole files (--dist loadfile) in collection order; the longest first lets the short ones
# fill in at the end instead of one worker finishing a 3-minute file alone. The lengths are each file's
# seconds in the last run, kept in pytest's cache (nothing to keep by hand); on a first run, an estimate
# from what the file starts: studies, trainings, processes.
DURATIONS_KEY = "weight_tuner/file_seconds"
COSTLY = {"cli(": 3, "Popen(": 2, '"bench"': 3, "run_bench(": 3, '"tune"': 2, "tune(": 2, "confirm(": 1,
          "train_model(": 1, "parametrize": 1}


def estimated_seconds(path: Path) -> int:
    """A first-run stand-in for a file's seconds: how often it starts a process, a study or a training."""
    text = path.read_text()
    return sum(weight * text.count(mark) for mark, weight in COSTLY.items())


class FileSeconds:
    """Sums each test file's seconds over a run and keeps them in the cache for the next run's order."""

    def __init__(self, config):
        self.config, self.seconds = config, {}

    def pytest_runtest_logreport(self, report):
        name = report.nodeid.split("::")[0].rsplit("/", 1)[-1]
        self.seconds[name] = self.seconds.get(name, 0.0) + report.duration

    def pytest_sessionfinish(self, session):
        # `-p no:cacheprovider` (a read-only checkout) leaves no cache: the order is then estimated
        if self.seconds and getattr(self.config, "cache", None) is not None and not hasattr(self.config, "workerinput"):
            kept = self.config.cache.get(DURATIONS_KEY, {})
            self.config.cache.set(DURATIONS_KEY, {**kept, **{k: round(v, 1) for k, v in self.seconds.items()}})


def pytest_configure(config):
    config.pluginmanager.register(FileSeconds(config), "weight-tuner-file-seconds")


def pytest_collection_modifyitems(config, items):
    """Longest files first (a stable sort: the tests of a file keep their order)."""
    cache = getattr(config, "cache", None)
    measured = cache.get(DURATIONS_KEY, {}) if cache is not None else {}
    paths = {item.path.name: item.path for item in items}
    if not all(name in measured for name in paths):
        measured = {name: estimated_seconds(path) for name, path in paths.items()}
    items.sort(key=lambda item: -measured[item.path.name])


def tiny_config(**overrides):
    """A model small and quick enough for tests, still able to learn the sample corpus."""
    base = {"hidden_size": 12, "num_layers": 1, "epochs": 6, "batch_size": 8, "window_size": 10,
            "prediction_stride": 5, "dropout": 0.0, "learning_rate": 0.01, "verbosity": 0, "seed": 1}
    base.update(overrides)
    return ModelConfig.from_dict(base)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("feature-cache")


@pytest.fixture(scope="session")
def shared_study(tmp_path_factory):
    """The suite's one finished study (:class:`support.SharedStudy`), built once for every xdist worker: the
    first to take the lock builds it in the run's common temporary folder, the others wait and read it."""
    from support import SharedStudy

    run = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    base = tmp_path_factory.getbasetemp()
    root = (base.parent / f"shared-study-{run}") if run else base / "shared-study"
    shared = SharedStudy(root)
    with open(f"{root}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (root.parent / f"{root.name}.done").exists():
            shared.build()
            (root.parent / f"{root.name}.done").touch()
    return shared


@pytest.fixture(scope="session")
def prepared(cache_dir):
    from weight_tuner.train import prepare

    return prepare(None, sample_docs=TINY_DOCS, cache_dir=cache_dir)
