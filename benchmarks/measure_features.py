"""Fit-then-transform against fit_transform_rows on one corpus: the same rows, and how long each takes.

Usage (from the repository root): ``python benchmarks/measure_features.py DIR`` (a YEDDA corpus, split seed 0),
or ``python benchmarks/measure_features.py sample``. Prints the line and non-zero counts, whether the two paths
gave identical rows and vocabularies, and each path's seconds (docs/benchmarks.md, "The refits taken by
the local workers").
"""
import sys
import time

import numpy as np

from weight_tuner import corpus, sample
from weight_tuner.features import Featurizer

if sys.argv[1] == "sample":
    docs, _ = corpus.read_texts({f"d{i}.ann": sample.generate_document(0, i) for i in range(24)})
else:
    docs, _ = corpus.read_corpus(sys.argv[1])
chunks = corpus.chunk_documents(docs)
split = corpus.split_chunks(chunks, seed=0)
by_id = {c.chunk_id: c for c in chunks}
texts = {n: [ln.text for cid in split[n] for ln in by_id[cid].lines] for n in corpus.SPLITS}
rest = texts["val"] + texts["test"]
t0 = time.perf_counter()
a = Featurizer().fit(texts["train"])
old = a.transform_rows(texts["train"] + rest)
old_s = time.perf_counter() - t0
t0 = time.perf_counter()
b = Featurizer()
new = b.fit_transform_rows(texts["train"], rest)
new_s = time.perf_counter() - t0
same = all(np.array_equal(getattr(old, k), getattr(new, k)) for k in ("indptr", "indices", "data"))
same = same and a.word_vectorizer.vocabulary_ == b.word_vectorizer.vocabulary_
print(f"lines {old.n_rows - 1}, nnz {old.nnz}: identical {same}; fit+transform {old_s:.1f}s, "
      f"fit_transform {new_s:.1f}s")
