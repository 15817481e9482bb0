"""Replay full confirmations through the racing rule: unit runs saved, decisions changed.

    python benchmarks/replay_racing.py OUT.json NAME=sqlite:///path.db#study [NAME=URL#study ...]

Each study must have a confirmation in which every run was trained (made with --no-racing, or by a
weight-tuner from before racing). Its per-unit scores are fed through :func:`weight_tuner.confirm.racing.replay`
as if the runs had come in the plan's order; the per-unit scores are written to OUT.json (the
replay test reads tests/data/confirmations.json) and a Markdown table is printed.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import optuna

from weight_tuner.confirm.plan import results, runs_of, unit_scores
from weight_tuner.confirm.racing import replay
from weight_tuner.schemes import THRESHOLDS, UNWEIGHTED


def confirmation_case(name: str, url: str, study_name: str) -> dict:
    """The per-unit scores of one study's full confirmation, with what the decision needs."""
    study = optuna.load_study(study_name=study_name, storage=url)
    companion = optuna.load_study(study_name=study.user_attrs["confirmation_study"], storage=url)
    plan = companion.user_attrs["plan"]
    finished = results(companion)
    missing = [r for r in runs_of(plan) if r not in finished]
    if missing:
        raise SystemExit(f"{name}: {len(missing)} runs of the plan never ran (a raced confirmation?): {missing[:3]}")
    base_runs = [finished[(UNWEIGHTED, u)] for u in plan["units"]]
    ratio = float(np.mean([t.user_attrs["lines"] for t in base_runs]) /
                  np.mean([t.user_attrs["train_lines"] for t in base_runs]))
    scores = unit_scores(plan, finished)
    candidates = {n: {"kind": c["kind"], "scores": scores[n]} for n, c in plan["candidates"].items()}
    return {"name": name, "units": plan["units"], "test_train_ratio": ratio, "candidates": candidates,
            "decision": study.user_attrs["recommendation"]["decision"]}


def main(argv: list[str]) -> None:
    out, specs = argv[0], argv[1:]
    cases = []
    for spec in specs:
        name, rest = spec.split("=", 1)
        url, study_name = rest.rsplit("#", 1)
        cases.append(confirmation_case(name, url, study_name))
    with open(out, "w") as fh:
        json.dump(cases, fh, indent=1)
    print("| confirmation | decision | unit runs planned | trained with racing | saved | stopped (after units) "
          "| decision changed |")
    print("|---|---|---|---|---|---|---|")
    for case in cases:
        r = replay(case["units"], case["candidates"], case["test_train_ratio"], UNWEIGHTED,
                   lambda n: n != THRESHOLDS)
        stopped = ", ".join(f"{k} ({v})" for k, v in r["stopped"].items()) or "none"
        print(f"| {case['name']} | {r['decision']} | {r['planned']} | {r['trained']} | {r['saved']} "
              f"({r['saved'] / r['planned']:.0%}) | {stopped} | {'no' if r['same'] else 'YES'} |")


if __name__ == "__main__":
    main(sys.argv[1:])
