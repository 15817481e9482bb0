"""Self-training on the unlabelled journal (issue 43): train the default `tune` model on one journal, label the
other with it, train EXTRA more epochs on both (the other with its predicted labels), score again.

    python benchmarks/experiment_selftrain.py Mycotaxon,Persoonia [EXTRA]

Measured on 2026-12-07 on f6b018e's code (run from a checkout of it with this file copied in).
"""
import sys

import numpy as np
import weight_tuner.train as T
from weight_tuner.config import ModelConfig
from weight_tuner.metrics import compute_stats
from weight_tuner.model import ModelCache
from weight_tuner.space import QUICK_MODEL
from weight_tuner.windows import offsets_from_sizes

EXTRA = int(sys.argv[2]) if len(sys.argv) > 2 else 2
cache = ModelCache()
out = {}
for setting in sys.argv[1].split(","):
    prepared = T.prepare("/work/shared/skol-corpus", cache_dir="studies/cache", split_by="journal", test_groups=[setting])
    src, tgt = prepared.splits["train"], prepared.splits["test"]
    before, after = [], []
    for seed in (0, 1, 2):
        cfg = ModelConfig.from_dict(QUICK_MODEL).replace(seed=seed, class_weights=None, verbosity=0)
        model, _ = T.train_model(prepared, cfg, cache=cache)
        probs = T.predict_probs(model, tgt, cfg)
        st0 = compute_stats(tgt.y, probs)
        pseudo = probs.argmax(1)  # every line of the other journal, with the label the model gave it
        sizes = list(np.diff(src.offsets)) + list(np.diff(tgt.offsets))
        combined = T.SplitData("train", src.rows, np.concatenate([src.index[:-1], tgt.index[:-1], [src.rows.pad_row]]).astype(np.int64),
                               np.concatenate([src.y, pseudo]), offsets_from_sizes(sizes), list(src.chunk_ids) + list(tgt.chunk_ids))
        data = T.TrainingData(combined, None, prepared.featurizer.n_features)
        c2 = cfg.replace(epochs=EXTRA)
        _, ds = T.training_data(data, c2)
        model.fit(ds, epochs=EXTRA, verbose=0, shuffle=False)
        st1 = T.evaluate(model, tgt, cfg)
        before.append(st0["important_f1"]); after.append(st1["important_f1"])
        print(f"self{EXTRA} {setting} seed {seed}: {st0['important_f1']:.4f} -> {st1['important_f1']:.4f}", flush=True)
    out[setting] = after
    print(f"== self{EXTRA} {setting}: {np.mean(before):.4f} -> {np.mean(after):.4f} ± {np.std(after, ddof=1):.4f}", flush=True)
print(f"== self{EXTRA} journal mean: {np.mean([np.mean(v) for v in out.values()]):.4f}", flush=True)
