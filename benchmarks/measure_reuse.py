"""What a reused model's run costs when TensorFlow's seed is set before it, against ``model.seed_run``.

Usage (from the repository root): ``python benchmarks/measure_reuse.py`` (the sample corpus, 60 documents, the
tiny model of the tests, one TensorFlow thread). Trains the same cached model 3 times with each way of
seeding and prints each run's epoch seconds (docs/benchmarks.md, "One traced model per process").
"""
import os

for var in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS"):
    os.environ.setdefault(var, "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tempfile  # noqa: E402
import time  # noqa: E402

import keras  # noqa: E402

from weight_tuner import model as model_stage  # noqa: E402
from weight_tuner.config import ModelConfig  # noqa: E402
from weight_tuner.train import prepare, train_model  # noqa: E402

prepared = prepare(None, sample_docs=60, cache_dir=tempfile.mkdtemp())
config = ModelConfig.from_dict({"hidden_size": 8, "num_layers": 1, "epochs": 3, "batch_size": 16, "window_size": 10,
                                "prediction_stride": 5, "learning_rate": 0.01, "verbosity": 0})
cache = model_stage.ModelCache()
train_model(prepared, config, cache=cache)  # build and trace once
for label, seed in (("keras.utils.set_random_seed", keras.utils.set_random_seed), ("seed_run", model_stage.seed_run)):
    model_stage.seed_run, real = seed, model_stage.seed_run  # what train_model calls before each run
    for _ in range(3):
        t0 = time.perf_counter()
        _, history = train_model(prepared, config, cache=cache, score_epochs=False)
        epochs = ", ".join(f"{h['train_seconds']:.2f}" for h in history)
        print(f"{label:28s} run {time.perf_counter() - t0:.2f} s, epochs {epochs} s")
    model_stage.seed_run = real
