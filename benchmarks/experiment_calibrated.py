"""Calibrate, then adapt priors; and the confirmation's members with refits in one average.

    python benchmarks/experiment_calibrated.py SPLIT TEST_GROUP OUT_DIR [CACHE_DIR] [SEEDS]

SPLIT and TEST_GROUP as in benchmarks/experiment_deployed.py: the default `tune` model, unweighted, on
SKOL. For each seed s (default 0,1,2) it trains the 6 members of the confirmation's default units
(seeds s + repeat) and 3 refits on every non-test line (seeds s, s + 10, s + 20), and keeps every
model's test probabilities and every member's probabilities on its own held-out fold in
OUT_DIR/<split>-<group>-s<seed>.npz (a later call scores them without training again).

Calibration is bias-corrected temperature scaling (Alexandari et al. 2020, `posthoc.fit_calibration`),
fitted on the members' held-out folds only: one fit per member on its own held-out fold, the
parameters averaged (`posthoc.mean_calibration`, what `tune` does), and ("pooled cal") one fit on
all held-out folds together. EM prior adaptation then runs per test file from the class
balance of those held-out lines. Prints one JSON line per seed with the test important_f1 of each
way of combining the models; the test split decides nothing in a study.
"""

import json
import sys
import time
from pathlib import Path

import numpy as np

from weight_tuner import logs

logs.configure(0)
logs.import_tensorflow(0)

from weight_tuner.config import CLASSES, ModelConfig  # noqa: E402
from weight_tuner.folds import make_units, refit_data, unit_data  # noqa: E402
from weight_tuner.metrics import compute_stats  # noqa: E402
from weight_tuner.posthoc import adapt_priors, apply_calibration, fit_calibration, mean_calibration  # noqa: E402
from weight_tuner.space import DEFAULT_EVALUATION, QUICK_MODEL  # noqa: E402
from weight_tuner.train import TrainingData, predict_probs, prepare, train_model  # noqa: E402
from weight_tuner.unitrun import unit_config  # noqa: E402

split_by, group, out_dir = sys.argv[1], sys.argv[2], Path(sys.argv[3])
cache = sys.argv[4] if len(sys.argv) > 4 else None
seeds = [int(s) for s in sys.argv[5].split(",")] if len(sys.argv) > 5 else [0, 1, 2]
data = Path(__file__).resolve().parents[1].parent / "shared" / "skol-corpus"
prep = prepare(data, split_by=split_by, test_groups=None if group == "-" else [group], cache_dir=cache)
test = prep.splits["test"]
docs = [cid.rsplit("#", 1)[0] for cid in test.chunk_ids]  # chunk ids are "<file>#<k>"
line_doc = np.repeat(np.array(docs), np.diff(test.offsets))
folds, repeats, refits = DEFAULT_EVALUATION["folds"], DEFAULT_EVALUATION["repeats"], 3
out_dir.mkdir(parents=True, exist_ok=True)
held_sizes = [unit_data(prep, unit, folds).val.n for unit in make_units(folds, repeats)]


def train_all(seed: int) -> dict:
    """Every model's probabilities for one seed (trained once, then read from OUT_DIR)."""
    path = out_dir / f"{split_by}-{group}-s{seed}.npz"
    if path.exists():
        return dict(np.load(path))
    cfg = ModelConfig.from_dict(dict(QUICK_MODEL, seed=seed, verbosity=0))
    members, held_probs, held_y = [], [], []
    for unit in make_units(folds, repeats):
        ud = unit_data(prep, unit, folds)
        model, _ = train_model(TrainingData(ud.train, None, ud.n_features), unit_config(cfg, unit))
        members.append(predict_probs(model, test, cfg))
        held_probs.append(predict_probs(model, ud.val, cfg))
        held_y.append(ud.val.y)
    rd = refit_data(prep)
    fits = []
    for k in range(refits):
        model, _ = train_model(rd, cfg.replace(seed=seed + 10 * k))
        fits.append(predict_probs(model, test, cfg))
    out = {"members": np.stack(members), "refits": np.stack(fits),
           "held_probs": np.concatenate(held_probs), "held_y": np.concatenate(held_y)}
    np.savez(path, **out)
    return out


def adapted(probs, prior):
    out = probs.astype(np.float64).copy()
    for doc in dict.fromkeys(docs):
        rows = line_doc == doc
        out[rows] = adapt_priors(probs[rows], prior)[0]
    return out


def score(probs):
    return round(float(compute_stats(test.y, probs)["important_f1"]), 4)


for seed in seeds:
    t0 = time.perf_counter()
    p = train_all(seed)
    pooled = fit_calibration(p["held_probs"], p["held_y"])
    # What tune does: one fit per unit on its own held-out fold, parameters averaged.
    cuts = np.cumsum([0] + held_sizes)
    calibration = mean_calibration([fit_calibration(p["held_probs"][lo:hi], p["held_y"][lo:hi])
                                    for lo, hi in zip(cuts[:-1], cuts[1:])])
    source = np.bincount(p["held_y"], minlength=len(CLASSES)) / len(p["held_y"])
    combos = {"ensemble": p["members"], "refits": p["refits"], "refit": p["refits"][:1],
              "ensemble+refits": np.concatenate([p["members"], p["refits"]])}
    row = {"split": split_by, "test": group, "seed": seed,
           "temperature": round(calibration.temperature, 3), "biases": [round(b, 3) for b in calibration.biases],
           "pooled temperature": round(pooled.temperature, 3), "pooled biases": [round(b, 3) for b in pooled.biases]}
    for name, models in combos.items():
        row[name] = score(models.mean(axis=0))
        calibrated = np.mean([apply_calibration(m, calibration) for m in models], axis=0)
        row[f"{name}+cal"] = score(calibrated)
        row[f"{name}+cal+prior"] = score(adapted(calibrated, source))
        row[f"{name}+pooled cal"] = score(np.mean([apply_calibration(m, pooled) for m in models], axis=0))
    row["seconds"] = round(time.perf_counter() - t0)
    print(json.dumps(row), flush=True)
