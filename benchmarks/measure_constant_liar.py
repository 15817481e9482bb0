"""Does constant_liar change what parallel TPE workers sample? Two workers on the sample corpus.

    python benchmarks/measure_constant_liar.py [TRIALS] [REPEATS]

For constant_liar on and off, and each repeat (sampler seeds differ), a study is created with one
enqueued scheme, then two worker processes run TRIALS trials together (a tiny model, no pruning).
For every pair of TPE-sampled trials that ran at the same time, the distance between their weights
(log10 of the N/M and D/M ratios) is computed: parallel workers that sample the same region show
small distances. Prints one JSON line per setting and repeat: the pairs that overlapped in time,
their median and smallest distance, and the best validation important_f1.
"""

import json
import math
import multiprocessing as mp
import sys
import tempfile
from pathlib import Path

CACHE = Path(tempfile.gettempdir()) / "wt-liar-cache"
MODEL = {"hidden_size": 4, "num_layers": 1, "epochs": 2, "batch_size": 16, "window_size": 10,
         "prediction_stride": 5, "learning_rate": 0.01, "input_projection": 8}


def _use_sampler(liar: bool) -> None:
    import optuna

    from weight_tuner.search import run

    run.make_sampler = lambda seed: optuna.samplers.TPESampler(seed=seed, n_startup_trials=10, constant_liar=liar)


def worker(url: str, name: str, trials: int, liar: bool, seed: int) -> None:
    from weight_tuner import logs

    logs.configure(-1)
    logs.import_tensorflow(-1)
    _use_sampler(liar)
    from weight_tuner.search.run import join_study
    from weight_tuner.train import prepare

    join_study(prepare(None, sample_docs=40, cache_dir=CACHE), url, name, trials, seed=seed)


def measure(trials: int, liar: bool, repeat: int) -> dict:
    import optuna

    from weight_tuner import logs

    logs.configure(-1)
    _use_sampler(liar)
    from weight_tuner.search.run import tune
    from weight_tuner.space import StudyConfig
    from weight_tuner.train import prepare

    folder = Path(tempfile.mkdtemp())
    url, name = f"sqlite:///{folder}/liar.db", "liar"
    cfg = StudyConfig(model=dict(MODEL, verbosity=0), schemes=["unweighted"], pruner={"type": "none"})
    tune(prepare(None, sample_docs=40, cache_dir=CACHE), url, name, 1, cfg, seed=repeat)
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=worker, args=(url, name, trials, liar, 100 * repeat + i)) for i in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    study = optuna.load_study(study_name=name, storage=url)
    sampled = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
               if t.user_attrs.get("scheme") == "search" and t.number >= 10]  # past TPE's random start-up

    def point(t):
        return (math.log10(t.params["w_Nomenclature"]), math.log10(t.params["w_Description"]))

    distances = []
    for i, a in enumerate(sampled):
        for b in sampled[i + 1:]:
            if a.datetime_start < b.datetime_complete and b.datetime_start < a.datetime_complete:
                distances.append(math.dist(point(a), point(b)))
    distances.sort()
    return {"constant_liar": liar, "repeat": repeat, "tpe_trials": len(sampled), "overlapping_pairs": len(distances),
            "median_distance": round(distances[len(distances) // 2], 3) if distances else None,
            "min_distance": round(distances[0], 3) if distances else None,
            "best_val_important_f1": round(max(t.value for t in study.trials if t.value is not None), 4)}


if __name__ == "__main__":
    trials = int(sys.argv[1]) if len(sys.argv) > 1 else 24
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    for repeat in range(repeats):
        for liar in (True, False):
            print(json.dumps(measure(trials, liar, repeat)), flush=True)
