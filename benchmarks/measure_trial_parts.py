"""Where a trial's training time goes: a bare ``fit`` against ``train_model`` (which scores validation
after every epoch), and what one validation scoring costs at each stride.

    python benchmarks/measure_trial_parts.py ../shared/skol-corpus studies/cache

Prints one JSON line (seconds). Runs on one process with the default model of ``tune``.
"""

import json
import sys
import time

from weight_tuner import logs

logs.import_tensorflow()
import keras  # noqa: E402 (after TensorFlow is imported quietly)

from weight_tuner.config import ModelConfig
from weight_tuner.model import ModelCache, build_model
from weight_tuner.space import StudyConfig
from weight_tuner.train import evaluate, prepare, train_model, training_data

prepared = prepare(sys.argv[1], cache_dir=sys.argv[2])
config = ModelConfig.from_dict(dict(StudyConfig().model, class_weights=None, verbosity=0))
out = {"epochs": config.epochs, "window": config.window_size, "stride": config.prediction_stride}
_, ds = training_data(prepared, config)
keras.utils.set_random_seed(config.seed)
t0 = time.perf_counter(); model = build_model(prepared.featurizer.n_features, config)
model.fit(ds, epochs=config.epochs, verbose=0, shuffle=False); out["bare_fit"] = round(time.perf_counter() - t0, 1)
t0 = time.perf_counter(); evaluate(model, prepared.splits["val"], config, config.window_size); out["val_score_window_stride"] = round(time.perf_counter() - t0, 1)
t0 = time.perf_counter(); evaluate(model, prepared.splits["val"], config, config.prediction_stride); out["val_score_prediction_stride"] = round(time.perf_counter() - t0, 1)
cache = ModelCache()
t0 = time.perf_counter(); m, hist = train_model(prepared, config, cache=cache); out["train_model_first"] = round(time.perf_counter() - t0, 1)
t0 = time.perf_counter(); m, hist = train_model(prepared, config, cache=cache); out["train_model_cached"] = round(time.perf_counter() - t0, 1)
out["epoch_train_s"] = [round(h["train_seconds"], 1) for h in hist]
out["epoch_total_s"] = [round(h["seconds"], 1) for h in hist]
print(json.dumps(out))
