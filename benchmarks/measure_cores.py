"""How many cores one training run keeps busy: wall and CPU time of ``train_model`` on a study's model.

    python benchmarks/measure_cores.py DATA CACHE_DIR STORAGE_URL STUDY unscored,scored,...

Prepares DATA as ``tune`` did (from the feature cache) and trains the study's unweighted model config
once per mode, with one reused model as a trial does: ``scored`` scores the validation split after
every epoch (a search trial), ``unscored`` does not (a unit run). Prints wall seconds, CPU seconds
(user + system, all threads), their ratio and each epoch's training seconds. Start several copies at
once, with the thread settings to compare (``TF_NUM_INTRAOP_THREADS``, ...), to see what processes
sharing the machine get.
"""

from __future__ import annotations

import json
import os
import sys
import time

import optuna


def main(data: str, cache_dir: str, url: str, name: str, modes: str) -> None:
    from weight_tuner import logs

    logs.import_tensorflow()
    from weight_tuner.model import ModelCache
    from weight_tuner.storage import unweighted_config
    from weight_tuner.train import prepare, train_model

    prepared = prepare(data, cache_dir=cache_dir)
    config = unweighted_config(optuna.load_study(study_name=name, storage=url)).replace(verbosity=0)
    cache = ModelCache()
    for mode in modes.split(","):
        c0, t0 = os.times(), time.perf_counter()
        _, history = train_model(prepared, config, cache=cache, score_epochs=(mode == "scored"))
        c1, wall = os.times(), time.perf_counter() - t0
        cpu = (c1.user - c0.user) + (c1.system - c0.system)
        print(json.dumps({"mode": mode, "wall": round(wall, 1), "cpu": round(cpu, 1), "cores": round(cpu / wall, 2),
                          "epochs": [round(h["train_seconds"], 1) for h in history]}), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:6])
