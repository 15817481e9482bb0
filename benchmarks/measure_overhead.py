"""A trial's wall time in a study against a bare ``model.fit`` of the same model, rows and epochs.

    python benchmarks/measure_overhead.py DATA CACHE_DIR STORAGE_URL STUDY

Prepares DATA as ``tune`` did (from the feature cache), times ``bench.bare_fit_seconds`` (build,
trace and fit the study's unweighted model config on its training split) and prints it beside the
wall time of the study's completed trials (start to completion, as stored). Then trains the model once as
a trial does and prints the seconds each epoch spent scoring the validation split (after training),
the part of a trial that a bare fit does not do. Run one copy per process the study ran with, at the
same time and with the same thread settings, so that the fit meets the same contention the
trials did (``tune --jobs 2`` on 2 cores: two copies, ``TF_NUM_INTRAOP_THREADS=1`` etc.).
"""

from __future__ import annotations

import json
import statistics
import sys

import optuna


def main(data: str, cache_dir: str, url: str, name: str) -> None:
    from weight_tuner import logs

    logs.import_tensorflow()
    from weight_tuner.bench import bare_fit_seconds
    from weight_tuner.storage import unweighted_config
    from weight_tuner.train import prepare, train_model

    study = optuna.load_study(study_name=name, storage=url)
    prepared = prepare(data, cache_dir=cache_dir)
    config = unweighted_config(study)
    bare = bare_fit_seconds(prepared, config)
    trials = [(t.datetime_complete - t.datetime_start).total_seconds()  # the whole trial, storage calls included
              for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    print(json.dumps({"bare_fit_seconds": round(bare, 1), "trials": len(trials),
                      "median_trial_seconds": round(statistics.median(trials), 1),
                      "overhead_fraction": round(statistics.median(trials) / bare - 1, 3)}), flush=True)
    _, history = train_model(prepared, config)  # scores validation after every epoch, as a trial does
    print(json.dumps({"epoch_train_seconds": [round(h["train_seconds"], 2) for h in history],
                      "epoch_scoring_seconds": [round(h["seconds"] - h["train_seconds"], 2) for h in history]}))


if __name__ == "__main__":
    main(*sys.argv[1:5])
