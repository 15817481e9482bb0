"""An ensemble of refits: does averaging several refits (every non-test line, different seeds) gain on
a journal the models never saw? The default `tune` model, unweighted, on SKOL.

    python benchmarks/experiment_refits.py SPLIT TEST_GROUP [CACHE_DIR] [SEEDS] [SIZE]

SPLIT and TEST_GROUP as in benchmarks/experiment_deployed.py. For each seed s (default 0,1,2) it trains
SIZE (default 3) refits with seeds s, s + 10, s + 20, ... and prints one JSON line: the test
important_f1 of the first refit alone (the refit of experiment_deployed.py, seed s) and of the
per-line mean of all of them. Training skips per-epoch validation, as there.
"""

import json
import sys
import time
from pathlib import Path

import numpy as np

from weight_tuner import logs

logs.configure(0)
logs.import_tensorflow(0)

from weight_tuner.config import ModelConfig  # noqa: E402
from weight_tuner.folds import refit_data  # noqa: E402
from weight_tuner.metrics import compute_stats  # noqa: E402
from weight_tuner.space import QUICK_MODEL  # noqa: E402
from weight_tuner.train import predict_probs, prepare, train_model  # noqa: E402

split_by, group = sys.argv[1], sys.argv[2]
cache = sys.argv[3] if len(sys.argv) > 3 else None
seeds = [int(s) for s in sys.argv[4].split(",")] if len(sys.argv) > 4 else [0, 1, 2]
size = int(sys.argv[5]) if len(sys.argv) > 5 else 3
data = Path(__file__).resolve().parents[1].parent / "shared" / "skol-corpus"
prep = prepare(data, split_by=split_by, test_groups=None if group == "-" else [group], cache_dir=cache)
test = prep.splits["test"]
refit = refit_data(prep)


def score(probs):
    return round(float(compute_stats(test.y, probs)["important_f1"]), 4)


for seed in seeds:
    t0 = time.perf_counter()
    probs = []
    for k in range(size):
        cfg = ModelConfig.from_dict(dict(QUICK_MODEL, seed=seed + 10 * k, verbosity=0))
        model, _ = train_model(refit, cfg)
        probs.append(predict_probs(model, test, cfg))
    print(json.dumps({"split": split_by, "test": group, "seed": seed, "refit": score(probs[0]),
                      f"mean of {size} refits": score(np.mean(probs, axis=0)),
                      "each": [score(p) for p in probs], "seconds": round(time.perf_counter() - t0)}), flush=True)
