"""Replay candidate pruners on a study that ran without pruning (every trial's whole learning curve).

    python benchmarks/replay_pruners.py STORAGE STUDY [STORAGE STUDY ...]

Each completed trial is replayed in its original order through an in-memory Optuna study with the
candidate pruner: its per-epoch values are reported with `trial.report` and `trial.should_prune()`
decides, exactly as `Objective` does. (The sampler's later choices would differ once a trial is
pruned; the replay keeps the trials that ran.) For each pruner and study: the epochs it would have
saved, how many trials it prunes, and how many of the trials that finished in the top 3, or above
the unweighted trial, it would have pruned. Prints a Markdown table.
"""

import sys

import optuna
from optuna.trial import TrialState

optuna.logging.set_verbosity(optuna.logging.WARNING)

CANDIDATES = {
    "median, 5 startup trials, 1 warm-up epoch (the old default)":
        lambda: optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1),
    "median, 5 startup trials, 3 warm-up epochs":
        lambda: optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=3),
    "median, 5 startup trials, 4 warm-up epochs":
        lambda: optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=4),
    "percentile 25, 5 startup trials, 3 warm-up epochs":
        lambda: optuna.pruners.PercentilePruner(25.0, n_startup_trials=5, n_warmup_steps=3),
    "patient (2 epochs) over median, 1 warm-up epoch":
        lambda: optuna.pruners.PatientPruner(optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1), 2),
    "successive halving, min resource 2":
        lambda: optuna.pruners.SuccessiveHalvingPruner(min_resource=2),
    "hyperband, min resource 2":
        lambda: optuna.pruners.HyperbandPruner(min_resource=2, max_resource=6),
    "none": lambda: optuna.pruners.NopPruner(),
}


def curves(storage: str, name: str):
    """(number, {epoch: value}, final value, scheme) of each completed trial, in order."""
    study = optuna.load_study(study_name=name, storage=storage)
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    return [(t.number, dict(t.intermediate_values), t.value, t.user_attrs.get("scheme")) for t in done]


def replay(make_pruner, trials) -> dict:
    """Pruned trials (number -> epoch) and epochs run under the pruner."""
    study = optuna.create_study(direction="maximize", pruner=make_pruner())
    pruned, epochs = {}, 0
    for number, values, final, _ in trials:
        trial = study.ask()
        for step in sorted(values):
            epochs += 1
            trial.report(values[step], step)
            if trial.should_prune():
                pruned[number] = step
                study.tell(trial, state=TrialState.PRUNED)
                break
        else:
            study.tell(trial, final)
    return {"pruned": pruned, "epochs": epochs}


def main(argv):
    pairs = list(zip(argv[0::2], argv[1::2]))
    print("| study | pruner | epochs run (of all) | trials pruned | top-3 pruned | above unweighted pruned |")
    print("|---|---|---|---|---|---|")
    for storage, name in pairs:
        trials = curves(storage, name)
        total = sum(len(v) for _, v, _, _ in trials)
        ranked = sorted(trials, key=lambda t: -t[2])
        top3 = {t[0] for t in ranked[:3]}
        base = next((t[2] for t in trials if t[3] == "unweighted"), None)
        above = {t[0] for t in trials if base is not None and t[2] > base}
        for label, make in CANDIDATES.items():
            r = replay(make, trials)
            p = set(r["pruned"])
            print(f"| {name} ({len(trials)} trials) | {label} | {r['epochs']} of {total} "
                  f"({1 - r['epochs'] / total:.0%} saved) | {len(p)} | {len(p & top3)} of 3 | "
                  f"{len(p & above)} of {len(above)} |")


if __name__ == "__main__":
    main(sys.argv[1:])
