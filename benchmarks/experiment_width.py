"""Wider vocabularies, now that a row's width costs little memory: the default `tune` model on SKOL.

    python benchmarks/experiment_width.py MAX_WORDS MAX_CHAR_GRAMS SPLIT TEST_GROUP [CACHE_DIR]

SPLIT: `chunk` (TEST_GROUP `-`) or `journal` (TEST_GROUP Mycotaxon or Persoonia: train and validate
on the other journal). Trains the default `tune` model, unweighted, with seeds 0, 1 and 2 and scores
the test split. Prints one JSON line per seed (test important_f1, per-class F1, mean training seconds
of epochs 2+) and a summary line with the row width, the non-zeros per line and the peak RSS.
"""

import json
import resource
import sys
from pathlib import Path

import numpy as np

from weight_tuner import logs

logs.configure(0)
logs.import_tensorflow(0)

from weight_tuner.config import ModelConfig  # noqa: E402
from weight_tuner.features import Featurizer  # noqa: E402
from weight_tuner.space import QUICK_MODEL  # noqa: E402
from weight_tuner.train import evaluate, prepare, train_model  # noqa: E402

words, chars, split_by, group = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
cache = sys.argv[5] if len(sys.argv) > 5 else None
data = Path(__file__).resolve().parents[1].parent / "shared" / "skol-corpus"
prep = prepare(data, split_by=split_by, test_groups=None if group == "-" else [group], cache_dir=cache,
               featurizer=Featurizer(max_words=words, max_char_grams=chars))
scores = []
for seed in (0, 1, 2):
    cfg = ModelConfig.from_dict(dict(QUICK_MODEL, seed=seed, verbosity=0))
    model, history = train_model(prep, cfg)
    st = evaluate(model, prep.splits["test"], cfg)
    scores.append(st["important_f1"])
    print(json.dumps({"seed": seed, "important_f1": round(st["important_f1"], 4),
                      "Nomenclature_f1": round(st["Nomenclature_f1"], 4), "Description_f1": round(st["Description_f1"], 4),
                      "epoch_s": round(float(np.mean([h["train_seconds"] for h in history[1:]])), 2)}), flush=True)
rows = prep.splits["train"].rows
print(json.dumps({"max_words": words, "max_char_grams": chars, "split": split_by, "test": group,
                  "columns": prep.featurizer.n_features, "nonzeros_per_line": round(rows.nnz / (rows.n_rows - 1), 1),
                  "mean": round(float(np.mean(scores)), 4), "std": round(float(np.std(scores, ddof=1)), 4),
                  "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}), flush=True)
