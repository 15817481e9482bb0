"""Replay early stopping on a finished search's per-epoch validation values.

    python benchmarks/replay_early_stopping.py sqlite:///path.db STUDY [PATIENCE ...]

For each completed trial, with patience P: training would stop after the first epoch that is P epochs
past the best so far, and the best epoch's model would be kept. Prints the epochs run, the trials
whose value changes, and whether the confirmation's candidates (the best 3 trials) would change.
Epochs before the last are scored on non-overlapping windows and the last with the prediction
stride (see train.train_model), so a restored earlier epoch's value is the cheaper score.
"""

from __future__ import annotations

import sys

import optuna
from optuna.trial import TrialState


def stop_epoch(values: list[float], patience: int) -> int:
    """The number of epochs run with early stopping of this patience."""
    best, best_at = -1.0, 0
    for epoch, v in enumerate(values, start=1):
        if v > best:
            best, best_at = v, epoch
        elif epoch - best_at >= patience:
            return epoch
    return len(values)


def main(url: str, name: str, patiences: list[int]) -> None:
    study = optuna.load_study(study_name=name, storage=url)
    curves = {t.number: [t.intermediate_values[k] for k in sorted(t.intermediate_values)]
              for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.intermediate_values}
    full = {n: v[-1] for n, v in curves.items()}
    top = sorted(full, key=lambda n: -full[n])[:3]
    total = sum(len(v) for v in curves.values())
    print(f"{name}: {len(curves)} completed trials, {total} epochs; best 3 trials {top}")
    print("| patience | epochs run | saved | trials whose value changes | best 3 trials | same best 3 |")
    print("|---|---|---|---|---|---|")
    for p in patiences:
        stops = {n: stop_epoch(v, p) for n, v in curves.items()}
        value = {n: max(curves[n][:stops[n]]) for n in curves}
        changed = sum(abs(value[n] - full[n]) > 1e-12 for n in curves)
        ran = sum(stops.values())
        new_top = sorted(value, key=lambda n: -value[n])[:3]
        print(f"| {p} | {ran} of {total} | {1 - ran / total:.0%} | {changed} | {new_top} | "
              f"{'yes' if set(new_top) == set(top) else 'no'} |")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], [int(p) for p in sys.argv[3:]] or [1, 2, 3])
