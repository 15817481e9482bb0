"""Which model to deploy: the search's single model, the confirmation's ensemble, or a refit, each with
and without prior adaptation per test file. The default `tune` model, unweighted, on SKOL.

    python benchmarks/experiment_deployed.py SPLIT TEST_GROUP [CACHE_DIR] [SEEDS]

SPLIT: `chunk` (TEST_GROUP `-`) or `journal` (TEST_GROUP Mycotaxon or Persoonia: train on the other
journal). For each seed s (default 0,1,2):
- single: trained on the search's training split with seed s (what `predict --study` used until now);
- ensemble: the 6 models of the confirmation's default units (3 folds x 2 repeats of the non-test
  chunks, seeds s + repeat), per-line probabilities averaged;
- refit: one model on every non-test line, seed s;
and each again with EM prior adaptation (`posthoc.adapt_priors`) per test file, from the class balance
its models were trained on. Prints one JSON line per seed with the test important_f1 of all six.
Training skips per-epoch validation (it does not change the weights: validation restores the model's
state), so these runs take less time than a study's.
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
from weight_tuner.deploy.ensemble import class_fractions, mean_fractions  # noqa: E402
from weight_tuner.folds import make_units, refit_data, unit_data  # noqa: E402
from weight_tuner.metrics import compute_stats  # noqa: E402
from weight_tuner.posthoc import adapt_priors  # noqa: E402
from weight_tuner.space import DEFAULT_EVALUATION, QUICK_MODEL  # noqa: E402
from weight_tuner.train import TrainingData, predict_probs, prepare, train_model  # noqa: E402
from weight_tuner.unitrun import unit_config  # noqa: E402

split_by, group = sys.argv[1], sys.argv[2]
cache = sys.argv[3] if len(sys.argv) > 3 else None
seeds = [int(s) for s in sys.argv[4].split(",")] if len(sys.argv) > 4 else [0, 1, 2]
data = Path(__file__).resolve().parents[1].parent / "shared" / "skol-corpus"
prep = prepare(data, split_by=split_by, test_groups=None if group == "-" else [group], cache_dir=cache)
test = prep.splits["test"]
# One test document per file: chunk ids are "<file>#<k>".
docs = [cid.rsplit("#", 1)[0] for cid in test.chunk_ids]
line_doc = np.repeat(np.array(docs), np.diff(test.offsets))
folds, repeats = DEFAULT_EVALUATION["folds"], DEFAULT_EVALUATION["repeats"]


def no_val(d):
    d = d.training() if hasattr(d, "training") else d
    return TrainingData(d.train, None, d.n_features)


def fit_and_predict(d, cfg):
    model, _ = train_model(no_val(d), cfg)
    return predict_probs(model, test, cfg)


def adapted(probs, prior):
    out = probs.astype(np.float64).copy()
    p = np.array([prior[c] for c in CLASSES])
    for doc in dict.fromkeys(docs):
        rows = line_doc == doc
        out[rows] = adapt_priors(probs[rows], p)[0]
    return out


def score(probs):
    return round(float(compute_stats(test.y, probs)["important_f1"]), 4)


for seed in seeds:
    t0 = time.perf_counter()
    cfg = ModelConfig.from_dict(dict(QUICK_MODEL, seed=seed, verbosity=0))
    probs, priors = {}, {}
    probs["single"] = fit_and_predict(prep, cfg)
    priors["single"] = class_fractions(prep.class_counts["train"])
    members, counts = [], []
    for unit in make_units(folds, repeats):
        ud = unit_data(prep, unit, folds)
        members.append(fit_and_predict(ud, unit_config(cfg, unit)))
        counts.append(ud.train.class_counts())
    probs["ensemble"] = np.mean(members, axis=0)
    priors["ensemble"] = mean_fractions(counts)
    rd = refit_data(prep)
    probs["refit"] = fit_and_predict(rd, cfg)
    priors["refit"] = class_fractions(rd.train.class_counts())
    row = {"split": split_by, "test": group, "seed": seed}
    for kind in ("single", "ensemble", "refit"):
        row[kind] = score(probs[kind])
        row[f"{kind}+prior"] = score(adapted(probs[kind], priors[kind]))
    row["members"] = [score(p) for p in members]
    row["seconds"] = round(time.perf_counter() - t0)
    print(json.dumps(row), flush=True)
