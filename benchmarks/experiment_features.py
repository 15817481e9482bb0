"""Feature variants on SKOL, trained on one journal and tested on the other, or on the chunk split.

Run from the repository root, as measured for docs/benchmarks.md (at commit 6b25837, whose default
features were word TF-IDF + word-suffix TF-IDF + shape cues; the `char` variant is what became the
default in features version 3):

    python benchmarks/experiment_features.py VARIANT SPLIT TEST_GROUP [L]

VARIANT: `char` (word TF-IDF + character 2-4-gram TF-IDF + shape cues) or `hashed` (word and character
3-4-gram ids hashed into 2^17 buckets, L per line, averaged by an embedding inside the model, + shape
cues); SPLIT: `journal` or `chunk`; TEST_GROUP: a journal, or `-` for the chunk split. Prints one JSON
line per seed (0, 1, 2) and a summary line with the feature matrices' size and the peak RSS.
"""
import json
import re
import resource
import sys
import time
import zlib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from weight_tuner import logs

logs.configure(0); logs.import_tensorflow(0)
import keras
from keras import ops

from weight_tuner import features as F
from weight_tuner import model as M
from weight_tuner import train as T
from weight_tuner.config import CLASSES, ModelConfig
from weight_tuner.space import QUICK_MODEL

L = int(sys.argv[4]) if len(sys.argv) > 4 else 96
BUCKETS = 2 ** 17
_WORD = re.compile(r"[^\W_]+", re.UNICODE)

def tokens(text):
    words = [w.lower() for w in _WORD.findall(re.sub(r"\d", "0", text))]
    out = ["w:" + w for w in words]
    for w in words:
        b = f"<{w}>"
        for n in (3, 4):
            out += ["c:" + b[i:i + n] for i in range(max(len(b) - n + 1, 1))]
    return out[:L]

class Hashed(F.Featurizer):
    def params(self):
        return {"kind": "hashed", "L": L, "buckets": BUCKETS}
    def fit(self, texts):
        self.word_vectorizer = True
        return self
    @property
    def n_features(self):
        return L + len(F.SHAPE_NAMES)
    def transform(self, texts, pad_row=True):
        out = np.zeros((len(texts) + int(pad_row), self.n_features), dtype=np.float32)
        for i, t in enumerate(texts):
            ids = [1 + zlib.crc32(tok.encode()) % BUCKETS for tok in tokens(t)]
            out[i, :len(ids)] = ids
            out[i, L:] = F.shape_features(t)
        return out

class Bag(keras.layers.Layer):
    def __init__(self, **kw):
        super().__init__(**kw)
        self.supports_masking = True
        self.emb = keras.layers.Embedding(BUCKETS + 1, 32)
    def call(self, x):
        ids = ops.cast(x[..., :L], "int32")
        present = ops.cast(ids > 0, "float32")[..., None]
        vec = ops.sum(self.emb(ids) * present, axis=-2) / ops.maximum(ops.sum(present, axis=-2), 1.0)
        return ops.concatenate([vec, x[..., L:]], axis=-1)
    def compute_mask(self, x, mask=None):
        return mask

def build(n_features, config):
    inputs = keras.Input(shape=(None, n_features))
    x = keras.layers.Masking(0.0)(inputs)
    x = Bag()(x)
    x = keras.layers.Dense(config.input_projection or 64, activation="relu")(x)
    for i in range(config.num_layers):
        x = keras.layers.Bidirectional(keras.layers.LSTM(config.hidden_size, return_sequences=True,
                                                         dropout=config.dropout))(x)
    out = keras.layers.Dense(len(CLASSES), activation="softmax")(x)
    m = keras.Model(inputs, out)
    m.compile(optimizer=keras.optimizers.Adam(config.learning_rate),
              loss=M.WeightedCategoricalCrossentropy(M.weights_vector(config.class_weights)))
    return m

from sklearn.feature_extraction.text import TfidfVectorizer


class CharGrams(F.Featurizer):
    """Word TF-IDF, then character 2-4-gram TF-IDF (within word boundaries) instead of word suffixes."""

    def params(self):
        return {"kind": "char", "max_words": self.max_words}

    def fit(self, texts):
        self.word_vectorizer = TfidfVectorizer(analyzer=F._word_tokens, max_features=self.max_words, min_df=2,
                                               sublinear_tf=True, dtype=np.float32)
        self.suffix_vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), lowercase=True,
                                                 max_features=1024, min_df=2, sublinear_tf=True, dtype=np.float32)
        self.word_vectorizer.fit(texts)
        self.suffix_vectorizer.fit(texts)
        return self


variant, split_by, test_group = sys.argv[1], sys.argv[2], sys.argv[3]
if variant == "hashed":
    F.Featurizer = Hashed
    M.build_model = build
elif variant == "char" and not hasattr(F.Featurizer(), "char_vectorizer"):
    F.Featurizer = CharGrams  # before features version 3; from then on the default Featurizer is this
prep = T.prepare(ROOT.parent / "shared" / "skol-corpus", split_by=split_by,
                 test_groups=[test_group] if test_group != "-" else None, cache_dir=None)
res = []
for seed in (0, 1, 2):
    cfg = ModelConfig.from_dict(dict(QUICK_MODEL, seed=seed))
    t0 = time.perf_counter()
    model, hist = T.train_model(prep, cfg)
    st = T.evaluate(model, prep.splits["test"], cfg)
    res.append({"seed": seed, "important_f1": st["important_f1"], "N": st["Nomenclature_f1"], "D": st["Description_f1"],
                "epoch_s": float(np.mean([h["train_seconds"] for h in hist[1:]])), "s": time.perf_counter() - t0})
    print(json.dumps(res[-1]), flush=True)
print(json.dumps({"variant": variant, "split": split_by, "test": test_group,
                  "mean": float(np.mean([r["important_f1"] for r in res])),
                  "X_MB": sum(s.X.nbytes for s in prep.splits.values()) / 2**20,
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}), flush=True)
