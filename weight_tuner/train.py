"""Training stage: from a corpus to a trained model and honest per-split scores.

``prepare`` reads, chunks, splits and featurises once; ``train_model`` trains
one model for one config (one study trial); ``evaluate`` scores a split that
the model never trained on.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Callable

import numpy as np

from . import corpus, sample
from .config import CLASSES, ModelConfig
from .errors import DataError
from .features import FEATURES_VERSION, Featurizer, build_features
from .rows import SparseRows, return_freed_memory
from .metrics import compute_stats
from .paths import DEFAULT_CACHE_DIR
from .sample import SAMPLE_DOCS
from .windows import build_windows, label_table, merge_window_probs, offsets_from_sizes, oversample_windows

logger = logging.getLogger(__name__)


@dataclass
class SplitData:
    """One split's lines: which feature rows they are, their labels and chunk boundaries.

    ``rows`` is a sparse store shared by every split and evaluation unit of a corpus; ``index``
    holds the store row of each line in reading order, then the store's padding row, so a window's
    line ``pad_index`` reads the empty row. A split is a view: it copies no features.
    ``chunk_ids`` name the chunks between ``offsets``: the provenance of every line (the tests check
    with them that units and splits never share a chunk).
    """

    name: str
    rows: SparseRows
    index: np.ndarray
    y: np.ndarray
    offsets: np.ndarray
    chunk_ids: list[str]

    def __post_init__(self) -> None:
        if len(self.index) != len(self.y) + 1 or self.index[-1] != self.rows.pad_row:
            raise ValueError(f"split {self.name}: index must hold one row per line, then the padding row")

    @staticmethod
    def whole(name: str, rows: SparseRows, y: np.ndarray, offsets: np.ndarray, chunk_ids: list[str]) -> "SplitData":
        """A split of every row of ``rows`` in order (a file being predicted, say)."""
        return SplitData(name, rows, np.arange(rows.n_rows, dtype=np.int64), y, offsets, chunk_ids)

    @property
    def n(self) -> int:
        return len(self.y)

    @property
    def pad_index(self) -> int:
        return len(self.y)

    def class_counts(self) -> dict[str, int]:
        """Lines per class."""
        return dict(zip(CLASSES, np.bincount(self.y, minlength=len(CLASSES)).astype(int).tolist()))

    def dense(self) -> np.ndarray:
        """The split's rows as one dense float32 matrix, padding row last (small data and tests only)."""
        return self.rows.dense(self.index)


@dataclass(frozen=True)
class TrainingData:
    """What training reads: the training split, the split scored after each epoch (``None``: no
    validation, as in a refit) and the row width. A study's search trains on :meth:`Prepared.training`;
    a confirmation unit or a refit is one of these built by :mod:`.folds`."""

    train: SplitData
    val: SplitData | None
    n_features: int


@dataclass
class Prepared:
    """Everything a trial needs, computed once per corpus: splits, featurizer and provenance."""

    source: str
    fingerprint: str
    chunk_ids: dict[str, list[str]]  # split name -> its chunks, in order (the split itself, stored with a study)
    splits: dict[str, SplitData]
    featurizer: Featurizer
    warnings: list[str] = field(default_factory=list)
    unlabelled_lines: int = 0
    cache_hit: bool = False
    label_map: dict[str, str] = field(default_factory=dict)  # overrides of the default raw-label mapping
    split_spec: dict = field(default_factory=lambda: {"by": "chunk"})  # how the split was made (its groups)

    @property
    def class_counts(self) -> dict[str, dict[str, int]]:
        """Lines per class of every split: ``{split: {class: lines}}``."""
        return {name: split.class_counts() for name, split in self.splits.items()}

    @cached_property
    def models(self):
        """The compiled model this process's training runs reuse (a :class:`.model.ModelCache`): the search's
        trials, the confirmation's unit runs and the refits train one at a time, one architecture, so the
        model is built and its steps traced once, not once per stage."""
        from .model import ModelCache  # imports TensorFlow: only when something trains

        return ModelCache()

    def training(self) -> TrainingData:
        """The search's training and validation splits, as training reads them."""
        return TrainingData(self.splits["train"], self.splits["val"], self.featurizer.n_features)

    def meta(self) -> dict:
        """Provenance to store with a study or a results file."""
        return {
            "source": self.source,
            "data_fingerprint": self.fingerprint,
            "class_counts": self.class_counts,
            "split": self.chunk_ids,
            "unlabelled_lines": self.unlabelled_lines,
            "reader_warnings": len(self.warnings),
            "n_features": self.featurizer.n_features,
            "features_version": FEATURES_VERSION,
            "label_map": self.label_map,
            "split_by": self.split_spec,
        }


def load_documents(data_dir: str | Path | None, sample_docs: int = SAMPLE_DOCS, sample_seed: int = 0,
                   rare_nomenclature: int = 1):
    """Documents from ``data_dir``, or the generated sample corpus when it is ``None``."""
    if data_dir is None:
        docs, report = corpus.read_texts(sample.generate_corpus(sample_docs, sample_seed, rare_nomenclature))
        rare = f", Nomenclature {rare_nomenclature}x rarer" if rare_nomenclature > 1 else ""
        return docs, report, f"{sample.SAMPLE_SOURCE} ({sample_docs} documents, seed {sample_seed}{rare})"
    docs, report = corpus.read_corpus(data_dir)
    return docs, report, str(Path(data_dir))


def _log_reading(docs, report, label_map) -> None:
    """What reading the corpus found: each warning (at debug level), their summary, the lines per class."""
    for w in report.warnings:
        logger.debug(w)
    summary = corpus.warning_summary(report)
    if summary:
        logger.warning(summary)
    for line in corpus.report_lines(docs, report, label_map):
        logger.info(line)


def _split(chunks, split_by: str, split_seed: int, test_groups: list[str] | None) -> tuple[dict, dict]:
    """The chunk ids of each split and the split's record (``{"by": "chunk"}``, or the groups held out)."""
    if split_by == "chunk":
        return corpus.split_chunks(chunks, seed=split_seed), {"by": "chunk"}
    split, spec = corpus.split_groups(chunks, split_by, seed=split_seed, test_groups=test_groups)
    logger.info(f"split by {split_by}: test {', '.join(spec['test_groups'])}; train "
                f"{', '.join(spec['train_groups'])}" + (f"; val {', '.join(spec['val_groups'])}"
                                                        if spec["val_groups"] else " (val: chunks of these)"))
    return split, spec


def prepare(data_dir: str | Path | None = None, *, split_seed: int = 0, sample_docs: int = SAMPLE_DOCS,
            cache_dir: str | Path | None = DEFAULT_CACHE_DIR, max_chunk_lines: int = 2000,
            label_map: dict[str, str] | None = None, sample_rare_nomenclature: int = 1,
            split_by: str = "chunk", test_groups: list[str] | None = None,
            featurizer: Featurizer | None = None, before_features: Callable[[str, dict], None] | None = None
            ) -> Prepared:
    """Read, chunk, split and featurise a corpus.

    ``label_map`` overrides the default raw-label -> class mapping, e.g. ``{"Diagnosis": "Description"}``.
    ``split_by`` is ``chunk`` (random chunks), or ``volume``/``journal``: whole groups held out for
    test (``test_groups``, or drawn with ``split_seed``), see :func:`.corpus.split_groups`.
    ``featurizer``: an unfitted :class:`.features.Featurizer` with other widths (default: the default one).
    ``before_features(fingerprint, split)`` runs once the corpus is read and split, before the features are
    computed or cached: a command checks there what it can (its study's data, the folds).
    """
    if split_by not in corpus.SPLIT_BY:
        raise DataError(f"--split-by: unknown {split_by!r}; choose from {', '.join(corpus.SPLIT_BY)}")
    if test_groups and split_by == "chunk":
        raise DataError("--test-group needs --split-by volume or journal")
    overrides = dict(label_map or {})
    label_map = corpus.make_label_map(overrides)
    docs, report, source = load_documents(data_dir, sample_docs, rare_nomenclature=sample_rare_nomenclature)
    _log_reading(docs, report, label_map)
    chunks = corpus.chunk_documents(docs, max_chunk_lines)
    split, spec = _split(chunks, split_by, split_seed, test_groups)
    by_id = {c.chunk_id: c for c in chunks}
    fingerprint = corpus.fingerprint_lines(chunks, overrides, spec if split_by != "chunk" else None)
    class_index = {c: i for i, c in enumerate(CLASSES)}
    texts, parts, doc_sizes, line_nos = {}, {}, {}, {}
    for name in corpus.SPLITS:
        lines = [ln for cid in split[name] for ln in by_id[cid].lines]
        sizes = [len(by_id[cid].lines) for cid in split[name]]
        texts[name] = [ln.text for ln in lines]
        doc_sizes[name] = sizes
        line_nos[name] = [ln.line_no for ln in lines]
        parts[name] = (
            np.array([class_index[label_map(ln.label)] for ln in lines], dtype=np.int64),
            offsets_from_sizes(sizes),
        )
    counts = {name: {c: int((parts[name][0] == i).sum()) for i, c in enumerate(CLASSES)} for name in corpus.SPLITS}
    for c in CLASSES:
        if counts["train"][c] == 0:
            raise DataError(f"class {c!r} is absent from the training split of {source}; "
                              "it cannot be learned or weighted")
    del docs, chunks, by_id, lines  # the line objects are not needed past here: free them before featurising
    if before_features is not None:
        before_features(fingerprint, split)
    featurizer, rows, ranges, hit = build_features(texts, fingerprint, split, cache_dir, featurizer, doc_sizes,
                                                   line_nos)
    del texts, line_nos
    return_freed_memory()
    splits = {name: SplitData(name, rows, np.append(np.arange(*ranges[name], dtype=np.int64), rows.pad_row),
                              parts[name][0], parts[name][1], split[name])
              for name in corpus.SPLITS}
    return Prepared(source, fingerprint, split, splits, featurizer, report.warnings,
                    report.unlabelled_lines, hit, overrides, spec)


PIPELINE_DEPTH = 2  # batches gathered ahead of the model, and in parallel


def make_dataset(split: SplitData, windows: np.ndarray, batch_size: int, *, labels: bool,
                 shuffle_seed: int | None = None, sparse: bool = True):
    """A tf.data pipeline of window batches, each gathered from the split's sparse rows when it is drawn.

    Only one batch of rows is expanded at a time, and TensorFlow never holds the corpus: the map reads
    the store's numpy arrays (memory-mapped from the cache, or in memory) in place, shared by every
    split and unit. A ``tf.data`` function copies every tensor it captures, so the rows stay outside
    TensorFlow. With ``sparse`` a batch is ``{"ids", "values"}`` for
    :class:`.model.SparseProjection`; without, dense float32 rows for models saved before features
    were sparse.
    """
    from .model import tensorflow

    tf = tensorflow()
    table = label_table(split.y) if labels else None  # numpy too: read per batch, never captured

    def rows_of(win):  # numpy, one batch: (batch, window) line positions -> the store's rows (and labels)
        rows = split.index[win]
        x = split.rows.gather(rows) if sparse else (split.rows.dense(rows),)
        return (*x, table[win]) if labels else x

    def gather(win):
        kinds = ((tf.int32, tf.float32) if sparse else (tf.float32,)) + ((tf.float32,) if labels else ())
        out = tf.numpy_function(rows_of, [win], kinds, stateful=False)
        if sparse:
            x = {"ids": tf.ensure_shape(out[0], [None, None, None]),
                 "values": tf.ensure_shape(out[1], [None, None, None])}
        else:
            x = tf.ensure_shape(out[0], [None, None, split.rows.n_features])
        return (x, tf.ensure_shape(out[-1], [None, None, len(CLASSES)])) if labels else x

    ds = tf.data.Dataset.from_tensor_slices(windows)
    if shuffle_seed is not None:
        ds = ds.shuffle(len(windows), seed=shuffle_seed, reshuffle_each_iteration=True)
    # A fixed depth, not AUTOTUNE: a tuned buffer held dozens of prediction batches (hundreds of MB).
    return ds.batch(batch_size).map(gather, num_parallel_calls=PIPELINE_DEPTH).prefetch(PIPELINE_DEPTH)


# Windows per inference batch: enough to amortise per-batch overhead (no gradients are kept), few
# enough that a batch's expanded rows stay small (128 x 15 lines x 3,091 columns x 4 bytes = 24 MB).
PREDICT_BATCH = 128


def predict_probs(model, split: SplitData, config: ModelConfig, stride: int | None = None) -> np.ndarray:
    """Per-line probabilities for a split: overlapping windows averaged, each line once.

    ``stride`` defaults to the config's ``prediction_stride``.
    """
    from .model import predict_step, reads_sparse_rows

    windows = build_windows(split.offsets, config.window_size, stride or config.prediction_stride, split.pad_index)
    ds = make_dataset(split, windows, max(config.batch_size, PREDICT_BATCH), labels=False,
                      sparse=reads_sparse_rows(model))
    step = predict_step(model)
    batches = [step(batch).numpy() for batch in ds]
    probs = np.concatenate(batches) if batches else np.zeros((0, config.window_size, len(CLASSES)), np.float32)
    return merge_window_probs(windows, probs, split.n)


def evaluate(model, split: SplitData, config: ModelConfig, stride: int | None = None) -> dict:
    """Per-class stats of ``model`` on ``split`` (windows every ``stride`` lines, default ``prediction_stride``)."""
    return compute_stats(split.y, predict_probs(model, split, config, stride))


EpochHook = Callable[[int, dict], None]

def _training(data: Prepared | TrainingData) -> TrainingData:
    return data.training() if isinstance(data, Prepared) else data


def training_data(data: Prepared | TrainingData, config: ModelConfig):
    """The training split's windows (``train_stride`` apart, oversampled as configured) and their
    shuffled, batched ``tf.data`` pipeline."""
    train = _training(data).train
    windows = build_windows(train.offsets, config.window_size, config.stride, train.pad_index)
    windows = oversample_windows(windows, train.offsets, train.y, CLASSES.index("Nomenclature"), config.oversample)
    return windows, make_dataset(train, windows, config.batch_size, labels=True, shuffle_seed=config.seed)


def trained_weights(data: Prepared | TrainingData, config: ModelConfig) -> dict[str, float] | None:
    """The config's class weights as they are trained: normalised over the training split's lines."""
    from .model import normalise_weights

    return normalise_weights(config.class_weights, _training(data).train.class_counts())


def train_model(data: Prepared | TrainingData, config: ModelConfig, epoch_hook: EpochHook | None = None,
                should_stop: Callable[[], None] | None = None, cache=None, score_epochs: bool = True):
    """Train one model on the training split of ``data`` (a :class:`TrainingData`, or a :class:`Prepared`'s).

    The class weights are normalised first (:func:`trained_weights`): only their ratios matter.

    With a ``cache`` (a :class:`.model.ModelCache`) the model is the cache's, re-initialised:
    the next call with the same cache resets it, so save or evaluate it before then. Without
    one a new model is built.

    After every epoch the validation split is scored (unless it is ``None``, as in a refit, or
    ``score_epochs`` is false, as in a unit run, which scores its held-out fold once, after training);
    ``epoch_hook(epoch, stats)`` receives those stats, or ``None`` unscored (a study reports and
    prunes there). Epochs before the last score non-overlapping windows (stride = ``window_size``),
    a cheap check that is enough to compare trials for pruning; the last epoch scores with
    ``prediction_stride``, as prediction does, and that is the trial's result.
    ``should_stop()`` is called after every batch and may raise to stop training there (a
    signal's safe point). Returns ``(model, history)`` where history holds one dict per epoch.
    """
    import keras

    from .model import EpochScoring, build_model, describe_weights, seed_run

    data = _training(data)
    config = config.replace(class_weights=trained_weights(data, config))
    seed_run(config.seed)
    windows, ds = training_data(data, config)
    n_features = data.n_features
    model = cache.get(n_features, config) if cache is not None else build_model(n_features, config)
    if config.verbosity >= 1:
        logger.info(describe_weights(config.class_weights))
        steps = math.ceil(len(windows) / config.batch_size)
        logger.info(f"[BiLSTM] {len(windows)} training windows, {steps} steps/epoch, {config.epochs} epochs")
    score = None if data.val is None or not score_epochs else (lambda m, stride: evaluate(m, data.val, config, stride))
    epochs = EpochScoring(config, score, epoch_hook)
    callbacks = [epochs]
    if should_stop is not None:  # a batch hook costs a call per step: only when there is a signal to check
        callbacks.append(keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: should_stop()))
    model.fit(ds, epochs=config.epochs, verbose=0, shuffle=False, callbacks=callbacks)
    return model, epochs.history
