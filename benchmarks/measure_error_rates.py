"""The decision's error rates on real unit noise: how often it recommends a candidate that is no better than
no weights (A/A), and how often it finds a planted gain (power), for the default design (3 folds x 2
repeats, the corrected resampled t at 95%).

    python benchmarks/measure_error_rates.py CORPUS SEEDS OUT.json [CACHE_DIR]

CORPUS is a folder of annotated files (``../shared/skol-corpus``) or ``sample`` (the embedded sample
corpus that ``make tune`` uses). The default ``tune`` model, unweighted, is trained on each of the 6
units with SEEDS seed offsets (0, 1000, 2000, ...; a unit's own seed is offset + its repeat, as in a
confirmation), and each unit's held-out important_f1 is kept in OUT.json (a rerun trains only what is
missing). Then every ordered pair of offsets (a, b) is one A/A confirmation: "no weights" trained with
offset a, a candidate that is the same model with offset b, so the true difference is 0. A
confirmation recommends the candidate when the lower bound of its interval is above 0: the A/A rate of
that is the false-recommendation rate per candidate, and the rate that at least one of 3 such
candidates clears (the default --confirm-top 3, each paired with the same no-weights runs) is the rate
per decision. Planted gains add +g to every unit's difference of the same pairs: the rate at which
they clear is the power at g, beside what ``statistics.detectable_gain`` predicts from the pooled noise.
Pairs share seeds, so they are not independent: the Clopper-Pearson intervals printed are a guide,
not exact. Prints one JSON object and writes it to OUT.json beside the scores.
"""

from __future__ import annotations

import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np

from weight_tuner import logs

logs.configure(0)
logs.import_tensorflow(0)

from scipy.stats import binomtest  # noqa: E402

from weight_tuner.config import ModelConfig  # noqa: E402
from weight_tuner.confirm.statistics import LEVEL, POWER, detectable_gain, paired_interval  # noqa: E402
from weight_tuner.folds import held_train_ratio, make_units, unit_data  # noqa: E402
from weight_tuner.space import DEFAULT_EVALUATION, QUICK_MODEL  # noqa: E402
from weight_tuner.train import prepare  # noqa: E402
from weight_tuner.unitrun import run_unit  # noqa: E402

GAINS = (0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.08, 0.12, 0.16)
OFFSET = 1000  # seed offsets far apart from the units' own repeat offsets (0, 1)
TOP = 3  # candidates per decision


def train_scores(corpus: str, seeds: int, out: Path, cache: str | None) -> dict:
    """Per-unit held-out important_f1 of the default model for each seed offset (kept in ``out``)."""
    saved = json.loads(out.read_text()) if out.exists() else {}
    scores = saved.get("scores", {})
    prep = prepare(None if corpus == "sample" else corpus, cache_dir=cache)
    folds, repeats = DEFAULT_EVALUATION["folds"], DEFAULT_EVALUATION["repeats"]
    units = make_units(folds, repeats)
    ratio = held_train_ratio(prep, units, folds)
    for k in range(seeds):
        config = ModelConfig.from_dict(dict(QUICK_MODEL, seed=k * OFFSET, verbosity=0))
        row = scores.setdefault(str(k * OFFSET), {})
        for unit in units:
            if unit.key in row:
                continue
            t0 = time.perf_counter()
            row[unit.key] = run_unit(unit_data(prep, unit, folds), config, unit)["scores"]["important_f1"]
            print(f"offset {k * OFFSET} unit {unit.key}: {row[unit.key]:.4f} ({time.perf_counter() - t0:.0f}s)",
                  file=sys.stderr, flush=True)
            out.write_text(json.dumps({"corpus": corpus, "ratio": ratio, "scores": scores}, indent=1))
    return {"corpus": corpus, "ratio": ratio, "scores": scores, "units": [u.key for u in units]}


def rate(hits: int, total: int) -> dict:
    """A proportion with its 95% Clopper-Pearson interval."""
    ci = binomtest(hits, total).proportion_ci(0.95, method="exact") if total else None
    return {"rate": hits / total if total else None, "hits": hits, "of": total,
            "ci": [round(ci.low, 4), round(ci.high, 4)] if ci else None}


def analyse(measured: dict) -> dict:
    """A/A false rates, per candidate and per decision of 3, and power at each planted gain."""
    units, ratio = measured["units"], measured["ratio"]
    table = {k: np.array([v[u] for u in units]) for k, v in measured["scores"].items() if len(v) == len(units)}
    offsets = sorted(table, key=int)
    pairs = [(a, b) for a, b in itertools.permutations(offsets, 2)]
    diffs = {p: table[p[1]] - table[p[0]] for p in pairs}

    def clears(d) -> bool:
        return paired_interval(d, ratio, LEVEL)["ci_low"] > 0

    per_candidate = rate(sum(clears(d) for d in diffs.values()), len(pairs))
    decisions = [(a, trio) for a in offsets for trio in itertools.combinations([o for o in offsets if o != a], TOP)]
    per_decision = rate(sum(any(clears(diffs[(a, b)]) for b in trio) for a, trio in decisions), len(decisions))
    # The noise: sd of the A/A unit differences, pooled over the pairs a < b (each pair's mean removed).
    centred = [d - d.mean() for (a, b), d in diffs.items() if int(a) < int(b)]
    sd = float(np.sqrt(sum(float((c ** 2).sum()) for c in centred) / (len(centred) * (len(units) - 1))))
    power = {f"{g:+.3f}": rate(sum(clears(d + g) for d in diffs.values()), len(pairs)) for g in GAINS}
    found = [g for g in GAINS if power[f"{g:+.3f}"]["rate"] >= POWER]
    return {"corpus": measured["corpus"], "units": len(units), "test_train_ratio": round(ratio, 4),
            "seed_offsets": len(offsets), "unit_scores_mean": round(float(np.mean(list(table.values()))), 4),
            "aa_sd_of_unit_differences": round(sd, 4),
            "false_recommendation_per_candidate": per_candidate,
            f"false_recommendation_per_decision_of_{TOP}": per_decision,
            "power": power, "smallest_gain_found_80pct": found[0] if found else None,
            "detectable_gain_formula": round(detectable_gain(sd, len(units), ratio), 4)}


def main() -> None:
    corpus, seeds, out = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    cache = sys.argv[4] if len(sys.argv) > 4 else None
    result = analyse(train_scores(corpus, seeds, out, cache))
    saved = json.loads(out.read_text())
    out.write_text(json.dumps(dict(saved, result=result), indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
