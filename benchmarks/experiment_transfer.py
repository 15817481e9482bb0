"""Ideas for a model that transfers to a journal it has not seen (issue 43): one variant of the default `tune`
model, unweighted, trained on one journal of ../shared/skol-corpus and tested on the other, seeds 0, 1, 2.

    python benchmarks/experiment_transfer.py VARIANT[+VARIANT] Mycotaxon,Persoonia[,chunk] [KEY=VALUE ...]

``KEY=VALUE`` overrides the model config (``epochs=3``, ``window_size=31``, ``dropout=0.5``). A variant
patches the features or the model of the code it runs against; each was measured on 2026-12-07 either on
f6b018e's code (features version 3: run from a checkout of f6b018e with this file copied into it) or on
features version 4 (this code), as docs/benchmarks.md's table of rejected ideas says:

- on f6b018e: ``base``, ``nfkc`` (NFKC, dashes folded), ``cues`` (eight taxonomic-citation cues),
  ``docrel`` / ``docrel2`` (length and tokens against the chunk's median, instead of or beside the
  absolute ones), ``shapes`` (token-shape n-grams in the word vocabulary), ``fdrop0.3`` (feature
  dropout), ``dropout=0.5``, ``epochs=3``; ``nfkc``, ``docrel2`` and ``shapes`` became features version 4,
  with ``gaps`` (a blank line before or after, now ``blank_before``/``blank_after``);
- on version 4: ``base``, ``dfdoc4`` (vocabularies chosen by the number of documents a term is in),
  ``nowords`` (8 words), ``window_size=31``; then (2026-12-07, second sitting) ``noidf`` (TF without IDF in
  all three blocks), ``noidf_words`` (in the words only), ``shape4k`` (4,096 token-shape n-grams),
  ``hidden_size=64``, ``input_projection=128``, ``num_layers=2``, ``train_stride=5 epochs=2``,
  ``train_stride=7 epochs=3`` and prediction stride 1; then (third sitting) ``chars`` (a learned encoder of
  each line's first ``CHAR_LEN`` characters, ``CHAR_FILTERS`` filters, beside the projection).

``EVAL_STRIDES=5,1`` scores each trained model at each of those prediction strides (one training, several
test scores): how the ``prediction_stride=1`` row was measured.

Patching internals is the point here: these are experiments, not the product.
"""
import json
import os
import re
import sys
import time
import unicodedata

import numpy as np
import weight_tuner.features as F
import weight_tuner.train as T
from weight_tuner.config import ModelConfig
from weight_tuner.model import ModelCache
from weight_tuner.space import QUICK_MODEL

DATA = os.environ.get("DATA", "/work/shared/skol-corpus")
variants = sys.argv[1].split("+")
settings = sys.argv[2].split(",")
overrides = {k: json.loads(v) for k, v in (a.split("=", 1) for a in sys.argv[3:])}

TR = str.maketrans({**{c: "-" for c in "\u2010\u2011\u2012\u2013\u2014\u2015\u2212"},
                    "\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"'})
def norm(t): return unicodedata.normalize("NFKC", t).translate(TR)

if "nfkc" in variants:
    orig_bf = T.build_features
    def bf(split_texts, *a, **k):
        return orig_bf({n: [norm(t) for t in ts] for n, ts in split_texts.items()}, *a, **k)
    T.build_features = bf

CUES = {
    "paren_author": re.compile(r"\([A-Z][^()]{0,40}?\.?\)\s*[A-Z]"),
    "abbrev": re.compile(r"\b[A-Z][a-z]{0,10}\.(?=[\s,:;)&]|$)"),
    "vol_page": re.compile(r"\b\d{1,4}\s*(?:\(\d{1,4}\)\s*)?[:]\s*\d{1,4}\b"),
    "year_paren": re.compile(r"\(\s*(?:1[789]\d\d|20[0-4]\d)\s*\)"),
    "numbered": re.compile(r"^\s*\d{1,3}[a-z]?\.\s+[A-Z]"),
    "binomial_any": re.compile(r"^\s*(?:\d{1,3}[a-z]?\.\s*)?[A-Z][a-zA-Z]+\s+(?:\([A-Za-z]+\)\s+)?[a-z][a-z-]{2,}\b|^\s*[A-Z]{3,}\s+[A-Z]{3,}\b"),
    "rank": re.compile(r"\b(?:subsp|ssp|var|f|forma|sect|subsect|subgen|subfam|fam|gen|sp|comb|stat|nom)\.", re.I),
    "et_al_amp": re.compile(r"\s(?:&|et|ex)\s"),
}
if "cues" in variants:
    orig_sf = F.shape_features
    def sf(text):
        base = orig_sf(text)
        n_abbrev = len(CUES["abbrev"].findall(text))
        extra = [float(bool(CUES[k].search(text))) for k in ("paren_author", "vol_page", "year_paren", "numbered", "binomial_any", "rank", "et_al_amp")]
        return base + extra + [min(n_abbrev / 4.0, 1.0)]
    F.shape_features = sf
    F.SHAPE_NAMES = F.SHAPE_NAMES + tuple(f"x{i}" for i in range(8))

_TOK = re.compile(r"\d+|[^\W\d_]+|[^\w\s]", re.UNICODE)
def tok_shape(t):
    if t.isdigit():
        return "Y" if len(t) == 4 and t[:2] in ("17", "18", "19", "20") else "0"
    if t[0].isalpha():
        if t.isupper():
            return "A" if len(t) == 1 else "AA"
        if t[0].isupper():
            return "Aa"
        return "a"
    return t
def shape_grams(text, n=4):
    toks = [tok_shape(t) for t in _TOK.findall(text)]
    toks = ["^"] + toks + ["$"]
    out = []
    for k in range(1, n + 1):
        out += [" ".join(toks[i:i + k]) for i in range(len(toks) - k + 1)]
    return out
if "shapes" in variants:
    orig_wt = F._word_tokens
    F._word_tokens = lambda text: orig_wt(text) + ["§" + g for g in shape_grams(text)]
    orig_wv2 = F._word_vectorizer
    F._word_vectorizer = lambda **kw: orig_wv2(**{**kw, "max_features": 2048})

if "nowords" in variants:
    F.Featurizer.__init__.__defaults__  # noqa
    orig_wv = F._word_vectorizer
    F._word_vectorizer = lambda **kw: orig_wv(**{**kw, "max_features": 8})

if "docrel" in variants or "docrel2" in variants:
    import collections
    recorded = []
    orig_ofs = T.offsets_from_sizes
    def ofs(sizes):
        recorded.append(list(sizes))
        return orig_ofs(sizes)
    T.offsets_from_sizes = ofs
    queue = collections.deque()
    orig_bf2 = T.build_features
    def bf2(split_texts, *a, **k):
        sizes = recorded[-3:]
        names = list(split_texts)
        assert len(sizes) == len(names)
        for name, sz in zip(names, sizes):
            texts = split_texts[name]
            assert sum(sz) == len(texts)
            lo = 0
            for n in sz:
                chunk = texts[lo:lo + n]
                med_len = max(np.median([len(t) for t in chunk]), 1.0)
                med_tok = max(np.median([len(t.split()) for t in chunk]), 1.0)
                for t in chunk:
                    queue.append((len(t) / med_len, len(t.split()) / med_tok))
                lo += n
        recorded.clear()
        return orig_bf2(split_texts, *a, **k)
    T.build_features = bf2
    prev_sf = F.shape_features
    def sf2(text):
        base = prev_sf(text)
        rl, rt = queue.popleft()
        if "docrel2" in variants:
            return base + [min(rl, 2.0), min(rt, 2.0)]
        base[9], base[10] = min(rl, 2.0), min(rt, 2.0)  # length, tokens: relative to the chunk's median
        return base
    F.shape_features = sf2
    if "docrel2" in variants:
        F.SHAPE_NAMES = F.SHAPE_NAMES + ("rel_len", "rel_tokens")

if any(v.startswith("fdrop") for v in variants):
    import keras
    from weight_tuner import model as M
    rate = float([v for v in variants if v.startswith("fdrop")][0][5:] or 0.3)
    orig_build, orig_call = M.SparseProjection.build, M.SparseProjection.call
    def build(self, input_shape):
        orig_build(self, input_shape)
        self._fd = keras.random.SeedGenerator(1234)
    def call(self, inputs, training=None):
        ids, values = inputs
        if training:
            values = keras.random.dropout(values, rate, seed=self._fd)
        return orig_call(self, [ids, values])
    M.SparseProjection.build, M.SparseProjection.call = build, call

if "gaps" in variants:  # measured on version 4 before its blank-line cues: they are these, now built in
    from weight_tuner import corpus as C
    gap_by_chunk = {}
    orig_cd = C.chunk_documents
    def cd(docs, *a, **k):
        chunks = orig_cd(docs, *a, **k)
        for c in chunks:
            nos = [ln.line_no for ln in c.lines]
            before = [1.0] + [float(nos[i] - nos[i - 1] > 1) for i in range(1, len(nos))]
            after = [float(nos[i + 1] - nos[i] > 1) for i in range(len(nos) - 1)] + [1.0]
            gap_by_chunk[c.chunk_id] = np.stack([before, after], axis=1)
        return chunks
    C.chunk_documents = cd
    flags = {}
    prev_bf4 = T.build_features
    def bf4(split_texts, fingerprint, split, *a, **k):
        order = ["train"] + [n for n in split_texts if n != "train"]
        flags["all"] = np.concatenate([gap_by_chunk[cid] for n in order for cid in split[n]])
        return prev_bf4(split_texts, fingerprint, split, *a, **k)
    T.build_features = bf4
    orig_dc = F.document_cues
    def dc(texts, sizes=None):
        base = orig_dc(texts, sizes)
        extra = flags["all"]
        assert len(extra) == len(texts), (len(extra), len(texts))
        return np.hstack([base, extra.astype(np.float32)])
    F.document_cues = dc
    F.SHAPE_NAMES = F.SHAPE_NAMES + ("gap_before", "gap_after")
    orig_dc_inner = orig_dc
    # document_cues allocates len(SHAPE_NAMES) columns: give it the base width
    def dc_base(texts, sizes=None):
        names = F.SHAPE_NAMES
        F.SHAPE_NAMES = names[:-2]
        try:
            return orig_dc_inner(texts, sizes)
        finally:
            F.SHAPE_NAMES = names
    orig_dc = dc_base

if "dfdoc4" in variants:
    from scipy import sparse as SP
    def select4(make, texts, sizes, k):
        probe = make(max_features=None, min_df=2)
        X = probe.fit_transform(texts)
        X.data[:] = 1
        owner = np.repeat(np.arange(len(sizes)), sizes)
        M = SP.csr_matrix((np.ones(len(owner)), (owner, np.arange(len(owner)))), shape=(len(sizes), len(owner)))
        df = np.asarray(((M @ X) > 0).sum(0)).ravel()
        tf = np.asarray(X.sum(0)).ravel()
        order = np.lexsort((-tf, -df))[:k]
        inv = {i: t for t, i in probe.vocabulary_.items()}
        return {inv[i]: j for j, i in enumerate(sorted(order))}
    def fit_transform_rows4(self, train, rest, sizes=None, line_nos=None):
        normalised = [F.normalise(t) for t in train]
        tsizes, acc = [], 0
        for n in sizes:
            if acc >= len(train):
                break
            tsizes.append(n); acc += n
        assert acc == len(train)
        self.word_vectorizer = F._word_vectorizer(vocabulary=select4(F._word_vectorizer, normalised, tsizes, self.max_words))
        self.char_vectorizer = F._char_vectorizer(vocabulary=select4(F._char_vectorizer, normalised, tsizes, self.max_char_grams))
        self.shape_vectorizer = F._shape_vectorizer(max_features=self.max_shape_grams, min_df=2)
        fitted = tuple(v.fit_transform(normalised) for v in self.vectorizers)
        return self._rows([*train, *rest], sizes, line_nos, fitted)
    F.Featurizer.fit_transform_rows = fit_transform_rows4

def _patch_vectorizer(name, **extra):
    orig = getattr(F, name)
    setattr(F, name, lambda **kw: orig(**{**kw, **extra}))


if "noidf" in variants:  # an IDF fitted on the training journal weighs up its own rare terms
    for name in ("_word_vectorizer", "_char_vectorizer", "_shape_vectorizer"):
        _patch_vectorizer(name, use_idf=False)
if "noidf_words" in variants:  # the same for the words alone
    _patch_vectorizer("_word_vectorizer", use_idf=False)

if "shape4k" in variants:
    orig_init = F.Featurizer.__init__
    def init4k(self, *a, **k):
        orig_init(self, *a, **k)
        self.max_shape_grams = 4096
    F.Featurizer.__init__ = init4k

if "chars" in variants:  # a learned encoder of each line's first CHAR_LEN characters beside the projection
    import keras
    from keras import ops
    from weight_tuner import model as M
    from weight_tuner.rows import SparseRows, FEATURE_DTYPE
    CHAR_LEN = int(os.environ.get("CHAR_LEN", "64"))
    CHAR_FILTERS = int(os.environ.get("CHAR_FILTERS", "64"))
    def char_code(c):  # ASCII as itself, letters beyond it by case, anything else one code
        o = ord(c)
        return o if 0 < o < 128 else (128 if c.isupper() else 129 if c.isalpha() else 130)
    orig_rows = F.Featurizer._rows
    def rows_with_chars(self, texts, sizes, line_nos, fitted, pad_row=True):
        base = orig_rows(self, texts, sizes, line_nos, fitted, pad_row)
        nf = base.n_features
        counts = np.diff(base.indptr)
        codes = [[char_code(c) for c in t.strip()[:CHAR_LEN]] for t in texts] + ([[]] if pad_row else [])
        extra = np.array([len(c) for c in codes], dtype=np.int64)
        indptr = np.concatenate([[0], np.cumsum(counts + extra)]).astype(np.int64)
        indices = np.empty(indptr[-1], np.int32); data = np.empty(indptr[-1], FEATURE_DTYPE)
        for i, c in enumerate(codes):
            lo, n = indptr[i], counts[i]
            indices[lo:lo + n] = base.indices[base.indptr[i]:base.indptr[i + 1]]
            data[lo:lo + n] = base.data[base.indptr[i]:base.indptr[i + 1]]
            indices[lo + n:indptr[i + 1]] = nf + np.arange(len(c))
            data[lo + n:indptr[i + 1]] = c
        return SparseRows(indptr, indices, data, nf)
    F.Featurizer._rows = rows_with_chars

    class CharEncoder(keras.layers.Layer):
        def __init__(self, n_features, **kw):
            super().__init__(**kw)
            self.n_features = n_features
            self.embed = keras.layers.Embedding(131, 16)
            self.conv = keras.layers.Conv1D(CHAR_FILTERS, 5, padding="same", activation="relu")
        def call(self, inputs):
            tf = M.tensorflow()
            ids, values = inputs
            pos = ids - self.n_features
            where = tf.where(pos >= 0)
            shape = tf.shape(ids, out_type=tf.int64)
            p = tf.cast(tf.gather_nd(pos, where), tf.int64)
            c = tf.cast(tf.gather_nd(values, where), tf.int32)
            chars = tf.scatter_nd(tf.stack([where[:, 0], where[:, 1], p], axis=1), c,
                                  tf.stack([shape[0], shape[1], tf.constant(CHAR_LEN, tf.int64)]))
            e = self.embed(tf.reshape(chars, [-1, CHAR_LEN]))
            h = tf.reduce_max(self.conv(e), axis=1)
            return tf.reshape(h, tf.stack([shape[0], shape[1], tf.constant(CHAR_FILTERS, tf.int64)]))

    class FeaturesOnly(keras.layers.Layer):
        def __init__(self, n_features, **kw):
            super().__init__(**kw)
            self.n_features = n_features
        def call(self, inputs):
            ids, values = inputs
            char = ids >= self.n_features
            return ops.where(char, 0, ids), ops.where(char, 0.0, values)

    def build_char_model(n_features, config):
        ids = keras.Input(shape=(None, None), dtype="int32", name="ids")
        values = keras.Input(shape=(None, None), dtype="float32", name="values")
        fids, fvals = FeaturesOnly(n_features)([ids, values])
        x = M.SparseProjection(config.input_projection, n_features, activation="relu", name="projection")([fids, fvals])
        ch = CharEncoder(n_features, name="chars")([ids, values])
        x = keras.layers.Concatenate()([x, ch])
        for i in range(config.num_layers):
            x = keras.layers.Bidirectional(keras.layers.LSTM(config.hidden_size, return_sequences=True,
                                                             dropout=config.dropout), name=f"bilstm_{i}")(x)
        out = keras.layers.Dense(len(M.CLASSES), activation="softmax", name="classes")(x)
        model = keras.Model({"ids": ids, "values": values}, out)
        model.compile(optimizer=keras.optimizers.Adam(learning_rate=config.learning_rate),
                      loss=M.WeightedCategoricalCrossentropy(M.weights_vector(config.class_weights)))
        return model
    M.build_model = build_char_model

strides = [int(x) for x in os.environ.get("EVAL_STRIDES", "0").split(",")]  # 0: the config's prediction_stride
cache = ModelCache()
out, extra = {}, {}
for setting in settings:
    kw = {} if setting == "chunk" else {"split_by": "journal", "test_groups": [setting]}
    prepared = T.prepare(DATA, cache_dir=None, **kw)
    scores = []
    for seed in (0, 1, 2):
        cfg = ModelConfig.from_dict(QUICK_MODEL).replace(seed=seed, class_weights=None, verbosity=0, **overrides)
        t0 = time.time()
        model, hist = T.train_model(prepared, cfg, cache=cache)
        for k, stride in enumerate(strides):
            st = T.evaluate(model, prepared.splits["test"], cfg, stride=stride or None)
            if k == 0:
                scores.append(st["important_f1"])
            else:
                extra.setdefault((setting, stride), []).append(st["important_f1"])
            print(f"{'+'.join(variants)} {overrides} {setting} seed {seed} stride {stride or cfg.prediction_stride}: {st['important_f1']:.4f} (N {st['Nomenclature_f1']:.3f} R {st['Nomenclature_recall']:.3f} / D {st['Description_f1']:.3f} R {st['Description_recall']:.3f}) {time.time()-t0:.0f}s", flush=True)
    out[setting] = scores
    if "docrel" in variants or "docrel2" in variants:
        assert not queue, len(queue)
    print(f"== {'+'.join(variants)} {overrides} {setting}: {np.mean(scores):.4f} ± {np.std(scores, ddof=1):.4f}", flush=True)
for (setting, stride), scores in extra.items():
    print(f"== {'+'.join(variants)} {overrides} {setting} at stride {stride}: {np.mean(scores):.4f} ± "
          f"{np.std(scores, ddof=1):.4f}", flush=True)
del_s = [s for s in settings if s != "chunk"]
if del_s:
    print(f"== {'+'.join(variants)} {overrides} journal mean: {np.mean([np.mean(out[s]) for s in del_s]):.4f}", flush=True)
