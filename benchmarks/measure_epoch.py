"""Epoch time and peak RSS of the default `tune` model on a corpus's chunk split.

    python benchmarks/measure_epoch.py ../shared/skol-corpus [epochs] [cache_dir]

Prints one JSON line: seconds of training per epoch (validation excluded), the final validation
important_f1 and the process's peak RSS. It uses only `prepare` and `train_model`, so the same
script measures two versions of the package side by side.
"""

import json
import resource
import sys

from weight_tuner.config import ModelConfig
from weight_tuner.space import QUICK_MODEL
from weight_tuner.train import prepare, train_model

data = sys.argv[1]
epochs = int(sys.argv[2]) if len(sys.argv) > 2 else 3
cache = sys.argv[3] if len(sys.argv) > 3 else None
prepared = prepare(data, cache_dir=cache)
config = ModelConfig.from_dict(dict(QUICK_MODEL, epochs=epochs, verbosity=0, seed=0))
_, history = train_model(prepared, config)
print(json.dumps({"train_seconds": [round(h["train_seconds"], 2) for h in history],
                  "val_important_f1": round(history[-1]["val"]["important_f1"], 4),
                  "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)}))
