"""The storage's ceiling: finished trials per second with N processes running a no-op objective.

    python benchmarks/measure_storage.py URL [SECONDS] [PROCESSES...]

e.g. `python benchmarks/measure_storage.py sqlite:////tmp/ceiling.db 20 1 2 4 8` or with
`postgresql://postgres@127.0.0.1:5432/test`. Each trial does what one of ours does to the storage,
without the training: TPE samples two weights (constant liar on), six intermediate values are
reported, 30 user attrs are set, with heartbeats every 10 s as `tune` opens the storage. Prints
one JSON line per process count: finished trials, seconds, trials per second. Every study it
makes is deleted at the end.
"""

import json
import multiprocessing as mp
import sys
import time

import optuna

from weight_tuner.search.run import make_sampler
from weight_tuner.storage import open_storage


def objective(trial: optuna.Trial) -> float:
    w_n = trial.suggest_float("w_Nomenclature", 0.1, 1000.0, log=True)
    w_d = trial.suggest_float("w_Description", 0.1, 1000.0, log=True)
    for step in range(1, 7):
        trial.report(w_n / (w_n + w_d), step)
    for i in range(30):
        trial.set_user_attr(f"attr_{i}", i * 0.5)
    return w_n / (w_n + w_d)


def worker(url: str, name: str, seconds: float, seed: int) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=name, storage=open_storage(url, heartbeat=10), sampler=make_sampler(seed))
    study.optimize(objective, timeout=seconds)


def measure(url: str, processes: int, seconds: float) -> dict:
    name = f"ceiling-{processes}-{int(time.time() * 1000)}"
    optuna.create_study(study_name=name, storage=open_storage(url), direction="maximize")
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=worker, args=(url, name, seconds, i)) for i in range(processes)]
    t0 = time.perf_counter()
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    wall = time.perf_counter() - t0
    study = optuna.load_study(study_name=name, storage=url)
    done = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))
    optuna.delete_study(study_name=name, storage=url)
    return {"storage": url.split(":", 1)[0], "processes": processes, "finished": done,
            "seconds": round(wall, 1), "trials_per_second": round(done / seconds, 1)}


if __name__ == "__main__":
    url = sys.argv[1]
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 20.0
    counts = [int(a) for a in sys.argv[3:]] or [1, 2, 4, 8]
    for n in counts:
        print(json.dumps(measure(url, n, seconds)), flush=True)
