"""``fit`` with and without a per-batch Python callback (the Ctrl-C safe point), same model and data.

    python benchmarks/measure_batch_hook.py [DATA or -]

Keras 3 dispatches batch callbacks asynchronously unless one defines ``on_train_batch_end``; this
measures whether ours costs anything. Prints one JSON line: seconds per fit, twice each.
"""

import json
import sys
import time

from weight_tuner import logs

logs.import_tensorflow()
import keras  # noqa: E402 (after TensorFlow is imported quietly)

from weight_tuner.config import ModelConfig
from weight_tuner.model import build_model
from weight_tuner.space import StudyConfig
from weight_tuner.train import prepare, training_data

data = sys.argv[1] if len(sys.argv) > 1 and sys.argv[1] != "-" else None
prepared = prepare(data, cache_dir="studies/cache")
config = ModelConfig.from_dict(dict(StudyConfig().model, class_weights=None))
_, ds = training_data(prepared, config)
out = {}
for rep in range(2):
    for name in ("plain", "batch_hook"):
        keras.utils.set_random_seed(config.seed)
        model = build_model(prepared.featurizer.n_features, config)
        cbs = [keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: None)] if name == "batch_hook" else []
        t0 = time.perf_counter()
        model.fit(ds, epochs=config.epochs, verbose=0, shuffle=False, callbacks=cbs)
        out.setdefault(name, []).append(round(time.perf_counter() - t0, 2))
print(json.dumps({"epochs": config.epochs, **out}))
