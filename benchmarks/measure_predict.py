"""Prediction speed of one model against an ensemble: `predict` over every file of a corpus.

    python benchmarks/measure_predict.py ../shared/skol-corpus MEMBERS [CACHE_DIR]

Builds the default `tune` model (untrained: speed does not depend on the weights) with the corpus's
fitted featurizer, saves MEMBERS bundles of it, and labels every `.ann` file with one bundle and then
with all of them, each model's probabilities calibrated (`predict_files`, as `predict --study` does).
Prints one JSON line per run with the lines per second and the seconds.
"""

import json
import sys
import tempfile
from pathlib import Path

from weight_tuner import logs

logs.configure(0)
logs.import_tensorflow(0)

from weight_tuner.config import ModelConfig  # noqa: E402
from weight_tuner.model import build_model  # noqa: E402
from weight_tuner.posthoc import Calibration  # noqa: E402
from weight_tuner.predict import predict_files  # noqa: E402
from weight_tuner.space import QUICK_MODEL  # noqa: E402
from weight_tuner.train import prepare
from weight_tuner.bundles import save_bundle  # noqa: E402

data, members = sys.argv[1], int(sys.argv[2])
cache = sys.argv[3] if len(sys.argv) > 3 else None
prep = prepare(data, cache_dir=cache)
with tempfile.TemporaryDirectory() as tmp:
    bundles = []
    for seed in range(members):
        cfg = ModelConfig.from_dict(dict(QUICK_MODEL, seed=seed, verbosity=0))
        path = Path(tmp) / f"m{seed}.keras"
        save_bundle(build_model(prep.featurizer.n_features, cfg), prep.featurizer, cfg, path, prep.label_map)
        bundles.append(path)
    for models in ([bundles[0]], bundles):
        result = predict_files(models, [data], out_dir=Path(tmp) / f"out{len(models)}",
                               calibration=Calibration(1.4, (0.0, 0.1, -0.1)))  # a typical fit on SKOL
        print(json.dumps({"models": len(models), **result["throughput"]}), flush=True)
