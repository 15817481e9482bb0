"""Replay ``tune --trials auto``'s stopping rule over stored studies: trials saved, candidates changed.

    python benchmarks/replay_stopping.py OUT.json NAME=sqlite:///path.db#study [NAME=URL#study ...]
    python benchmarks/replay_stopping.py copy sqlite:///path.db#study N FOLDER

``copy`` makes a study of the first N finished trials in FOLDER (the same study name, its user attrs, its members
folder with the split's artifact), on which ``weight-tuner tune --trials N`` confirms and decides what the rule's
stop would have decided.

Each study ran a fixed number of trials (``--trials N``). Its finished trials, in number order, are fed through
:func:`weight_tuner.search.stopping.stop_after` as if the search had asked the rule after each; the candidates
the confirmation would have read at that point (:func:`weight_tuner.confirm.plan.select_candidates` over the
trials so far) are compared with those of all N. The per-trial steps are written to OUT.json (the replay test
reads tests/data/searches.json) and a Markdown table is printed. Where the candidates differ, the decision
must be measured by confirming both (the table says which).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import optuna

from weight_tuner.confirm.plan import select_candidates
from weight_tuner.search.stopping import StoppingRule, finished_prefix, moves, steps_of, stop_after, study_noise
from weight_tuner.space import stored_evaluation


def truncated(study: optuna.Study, trials: list, storage=None, study_name: str | None = None) -> optuna.Study:
    """A copy of ``study`` holding only ``trials`` (and its user attrs): in memory, or in ``storage``."""
    copy = optuna.create_study(storage=storage, study_name=study_name, directions=study.directions)
    for key, value in study.user_attrs.items():
        copy.set_user_attr(key, value)
    copy.add_trials(trials)
    return copy


def numbers(candidates: dict, trials: list) -> list[int]:
    """The weight candidates' trial numbers in the stored study, best first (a copy numbers its trials 0, 1, ...
    in the order added: ``trials``' order)."""
    return [trials[c["trial"]].number for c in candidates.values() if c["kind"] == "weights"]


def case(name: str, url: str, study_name: str, rule: StoppingRule) -> dict:
    """One study replayed: where the rule stops, and the candidates there and at the end."""
    study = optuna.load_study(study_name=study_name, storage=url)
    trials = finished_prefix(study)
    steps = steps_of(trials)
    delta = study_noise(study, trials)
    top = stored_evaluation(study.user_attrs.get("evaluation"))["top"]
    rule = StoppingRule(max_trials=rule.max_trials, patience=rule.patience, min_trials=rule.min_trials, top=top)
    at = stop_after(steps, rule, delta) or len(trials)
    moved = [trials[i].number for i in moves(steps, top, delta)]
    early = numbers(select_candidates(truncated(study, trials[:at]), top), trials)
    full = numbers(select_candidates(truncated(study, trials), top), trials)
    return {"name": name, "trials": len(trials), "stop_at": at, "delta": delta, "moves": moved,
            "candidates_at_stop": early, "candidates_at_end": full, "same_candidates": early == full,
            "steps": [{"score": s.score, "key": list(s.key)} for s in steps], "top": top}


def copy_prefix(url: str, study_name: str, n: int, folder: Path) -> str:
    """The study of the first ``n`` finished trials of a SQLite study, in ``folder``; returns its storage URL."""
    study = optuna.load_study(study_name=study_name, storage=url)
    keep = finished_prefix(study)[:n]
    source = Path(url.removeprefix("sqlite:///")).parent / study_name
    folder.mkdir(parents=True, exist_ok=True)
    target = f"sqlite:///{folder.resolve() / Path(url).name}"
    truncated(study, keep, target, study_name)
    shutil.copytree(source / "members", folder / study_name / "members", dirs_exist_ok=True)
    return target


def main(argv: list[str]) -> None:
    if argv[0] == "copy":
        url, study_name = argv[1].rsplit("#", 1)
        print(copy_prefix(url, study_name, int(argv[2]), Path(argv[3])))
        return
    out, specs = argv[0], argv[1:]
    rule = StoppingRule()
    cases = []
    for spec in specs:
        name, rest = spec.split("=", 1)
        url, study_name = rest.rsplit("#", 1)
        cases.append(case(name, url, study_name, rule))
    with open(out, "w") as fh:
        json.dump({"rule": rule.as_dict(), "cases": cases}, fh, indent=1)
    print(f"Rule: {rule.as_dict()}\n")
    print("| study | trials run | rule stops at | saved | noise (delta) | trials that moved the candidates | "
          "candidates at the stop | at the end | same |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for c in cases:
        saved = 1 - c["stop_at"] / c["trials"]
        print(f"| {c['name']} | {c['trials']} | {c['stop_at']} | {saved:.0%} | {c['delta']:.4f} | "
              f"{', '.join(map(str, c['moves']))} | {', '.join(map(str, c['candidates_at_stop']))} | "
              f"{', '.join(map(str, c['candidates_at_end']))} | {'yes' if c['same_candidates'] else 'no'} |")


if __name__ == "__main__":
    main(sys.argv[1:])
