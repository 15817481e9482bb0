"""Resident memory after each stage of a study, in one process: where the peak comes from.

    python benchmarks/measure_memory.py ../shared/skol-corpus CACHE_DIR

Prints VmRSS and VmHWM (the peak so far) in MiB after importing TensorFlow, after `prepare`, after
each of three 2-epoch trials of the default `tune` model (one ModelCache, as the study's objective
owns one), and after two confirmation unit runs (with the threshold competitor, as the unweighted
candidate's runs do).
"""

import json
import sys

from weight_tuner import logs


def memory() -> dict:
    fields = dict(line.split(":", 1) for line in open("/proc/self/status") if line.startswith(("VmRSS", "VmHWM")))
    return {k: int(v.split()[0]) // 1024 for k, v in fields.items()}


logs.configure(-1)
logs.import_tensorflow(-1)
print(json.dumps({"stage": "tensorflow imported", **memory()}), flush=True)

from weight_tuner.config import ModelConfig  # noqa: E402
from weight_tuner.folds import make_units, unit_data  # noqa: E402
from weight_tuner.model import ModelCache  # noqa: E402
from weight_tuner.space import QUICK_MODEL  # noqa: E402
from weight_tuner.train import prepare, train_model  # noqa: E402
from weight_tuner.unitrun import run_unit

prepared = prepare(sys.argv[1], cache_dir=sys.argv[2] if len(sys.argv) > 2 else None)
print(json.dumps({"stage": "prepared", **memory()}), flush=True)
cache = ModelCache()
for i in range(3):
    weights = {"Nomenclature": 1.0 + i, "Description": 1.0, "Misc": 1.0}
    train_model(prepared, ModelConfig.from_dict(dict(QUICK_MODEL, epochs=2, class_weights=weights)), cache=cache)
    print(json.dumps({"stage": f"trial {i}", **memory()}), flush=True)
unit_cache = ModelCache()
for unit in make_units(3, 1)[:2]:
    run_unit(unit_data(prepared, unit, 3), ModelConfig.from_dict(dict(QUICK_MODEL, epochs=2)), unit, thresholds=True,
             cache=unit_cache)
    print(json.dumps({"stage": f"unit {unit.key}", **memory()}), flush=True)
