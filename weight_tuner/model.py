"""Model stage: the BiLSTM line classifier and the guide's weighted cross-entropy.

The loss and the sparse input layer are registered as Keras-serialisable: SKOL's custom loss
could not be deserialised at prediction time and every prediction silently became Misc.
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
from typing import Callable

os.environ.setdefault("KERAS_BACKEND", "tensorflow")  # before Keras is imported: it picks its backend then

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import ops  # noqa: E402

from .config import CLASSES, ModelConfig  # noqa: E402
from .errors import NonFiniteLossError  # noqa: E402

EPSILON = 1e-7
logger = logging.getLogger(__name__)


@keras.saving.register_keras_serializable(package="weight_tuner")
class WeightedCategoricalCrossentropy(keras.losses.Loss):
    """The guide's weighted categorical cross-entropy, averaged over real lines only.

    Per line: ``-w[true class] * log(clip(p[true class], 1e-7, 1 - 1e-7))``.
    Padded steps have an all-zero ``y_true`` row: their cross-entropy *and* their
    weight are zero, and they are left out of the count that the sum is divided
    by. (SKOL took ``argmax`` of the padded row, i.e. class 0, and counted it.)
    With ``class_weights=None`` this is plain cross-entropy.
    """

    def __init__(self, class_weights=None, name="weighted_categorical_crossentropy", **kwargs):
        kwargs["reduction"] = "sum"  # call() already divides by the number of real lines
        super().__init__(name=name, **kwargs)
        self.class_weights = None if class_weights is None else [float(w) for w in class_weights]
        self._weights_variable = None

    def make_reweightable(self) -> None:
        """Hold the weights in a variable, so :meth:`set_class_weights` needs no retracing of the train step."""
        self._weights_variable = keras.Variable(self.class_weights or [1.0] * len(CLASSES), trainable=False,
                                                dtype="float32", name="class_weights")

    def set_class_weights(self, class_weights) -> None:
        """Change the weights in place (after :meth:`make_reweightable`); ``None`` is unweighted."""
        self.class_weights = None if class_weights is None else [float(w) for w in class_weights]
        self._weights_variable.assign(self.class_weights or [1.0] * len(CLASSES))

    def call(self, y_true, y_pred):
        y_true = ops.cast(y_true, y_pred.dtype)
        y_pred = ops.clip(y_pred, EPSILON, 1.0 - EPSILON)
        ce = -ops.sum(y_true * ops.log(y_pred), axis=-1)
        if self._weights_variable is not None:  # all ones when unweighted: the same values as plain CE
            ce = ce * ops.sum(y_true * ops.cast(self._weights_variable, y_pred.dtype), axis=-1)
        elif self.class_weights is not None:
            weights = ops.convert_to_tensor(self.class_weights, dtype=y_pred.dtype)
            ce = ce * ops.sum(y_true * weights, axis=-1)
        n_real = ops.maximum(ops.sum(y_true), 1.0)
        return ce / n_real

    def get_config(self):
        config = super().get_config()
        config["class_weights"] = self.class_weights
        config.pop("reduction", None)
        return config


def weights_vector(class_weights: dict[str, float] | None) -> list[float] | None:
    """The weight dict as a list in output-unit order (``None`` stays unweighted)."""
    return None if class_weights is None else [float(class_weights[c]) for c in CLASSES]


def normalise_weights(class_weights: dict[str, float] | None, counts: dict[str, int]) -> dict[str, float] | None:
    """Scale weights so that their mean over the training lines is 1, keeping only their ratios.

    ``counts`` are the training lines per class. The loss then has the same scale in every
    trial, so two weight vectors with the same ratios train identically. Values are rounded to
    9 significant digits so that equal ratios give bit-equal weights; the function is idempotent.
    """
    if class_weights is None:
        return None
    total = sum(float(counts[c]) for c in CLASSES)
    mass = sum(float(counts[c]) * float(class_weights[c]) for c in CLASSES)
    if total <= 0 or mass <= 0:
        raise ValueError(f"cannot normalise weights {class_weights} over class counts {counts}")
    factor = total / mass
    if abs(factor - 1.0) < 1e-8:  # already normalised (up to rounding): leave as is
        factor = 1.0
    return {c: float(f"{float(class_weights[c]) * factor:.9g}") for c in CLASSES}


def describe_weights(class_weights: dict[str, float] | None) -> str:
    """The guide's ``[BiLSTM] Using weighted loss with class weights:`` block."""
    if class_weights is None:
        return "[BiLSTM] Using unweighted categorical cross-entropy"
    lines = ["[BiLSTM] Using weighted loss with class weights:"]
    lines += [f"  {name}: {class_weights[name]}" for name in sorted(class_weights)]
    return "\n".join(lines)


# Up to this many columns the projection expands the batch and multiplies it densely: at SKOL's
# 2,063 columns that step took 4.2 ms against 8.0 ms for TensorFlow's sparse-dense product (training
# step of the first layer, 32 windows of 15 lines, CPU; docs/benchmarks.md). Wider rows multiply
# sparse, so their cost follows the non-zeros.
DENSE_BATCH_COLUMNS = 8192


def _nonzeros(ids, values):
    """The batch's non-zeros as (line, column, value), lines numbered across the batch."""
    tf = tensorflow()
    shape = tf.shape(ids, out_type=tf.int64)
    where = tf.where(tf.not_equal(values, 0.0))
    line = where[:, 0] * shape[1] + where[:, 1]
    return shape, line, tf.cast(tf.gather_nd(ids, where), tf.int64), tf.gather_nd(values, where)


def _padding_mask(values):
    """True for a real line: it has a non-zero (its bias feature); a padding line has none."""
    return ops.any(ops.not_equal(values, 0.0), axis=-1)


@keras.saving.register_keras_serializable(package="weight_tuner")
class SparseProjection(keras.layers.Layer):
    """An embedding bag: each line's sparse feature row times a kernel, plus a bias, then the activation.

    Inputs are ``[ids, values]``, both shaped (batch, window, k): a line's non-zero columns and their
    values, padded with value 0. It computes exactly what ``Dense`` computes on the dense row; only one
    batch's rows are ever expanded (see :data:`DENSE_BATCH_COLUMNS`). A line without non-zeros is
    padding: the layer's output mask is False there, so the LSTMs skip it.
    """

    def __init__(self, units: int, n_features: int, activation=None, use_bias: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.units, self.n_features, self.use_bias = int(units), int(n_features), bool(use_bias)
        self.activation = keras.activations.get(activation)

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(self.n_features, self.units), initializer="glorot_uniform",
                                      name="kernel")
        self.bias = self.add_weight(shape=(self.units,), initializer="zeros", name="bias") if self.use_bias else None

    def call(self, inputs):
        tf = tensorflow()
        shape, line, column, value = _nonzeros(*inputs)
        lines = shape[0] * shape[1]
        kernel = ops.convert_to_tensor(self.kernel)
        if self.n_features <= DENSE_BATCH_COLUMNS:
            rows = tf.scatter_nd(tf.stack([line, column], axis=1), value, tf.stack([lines, self.n_features]))
            out = tf.matmul(rows, kernel)
        else:
            rows = tf.SparseTensor(tf.stack([line, column], axis=1), value, tf.stack([lines, self.n_features]))
            out = tf.sparse.sparse_dense_matmul(rows, kernel)
        out = tf.reshape(out, tf.stack([shape[0], shape[1], tf.constant(self.units, tf.int64)]))
        if self.bias is not None:
            out = out + self.bias
        return self.activation(out)

    def compute_mask(self, inputs, previous_mask=None):
        return _padding_mask(inputs[1])

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0][:2]) + (self.units,)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "n_features": self.n_features,
                "activation": keras.activations.serialize(self.activation), "use_bias": self.use_bias}


@keras.saving.register_keras_serializable(package="weight_tuner")
class DenseRows(keras.layers.Layer):
    """The batch's sparse rows ``[ids, values]`` as dense rows (batch, window, n_features), masked as padding
    where a line has no non-zeros: for a first layer that reads the whole row (``input_projection`` 0).

    Only one batch is ever dense, never the corpus.
    """

    def __init__(self, n_features: int, **kwargs):
        super().__init__(**kwargs)
        self.n_features = int(n_features)

    def call(self, inputs):
        tf = tensorflow()
        shape, line, column, value = _nonzeros(*inputs)
        rows = tf.scatter_nd(tf.stack([line, column], axis=1), value,
                             tf.stack([shape[0] * shape[1], tf.constant(self.n_features, tf.int64)]))
        return tf.reshape(rows, tf.stack([shape[0], shape[1], tf.constant(self.n_features, tf.int64)]))

    def compute_mask(self, inputs, previous_mask=None):
        return _padding_mask(inputs[1])

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0][:2]) + (self.n_features,)

    def get_config(self):
        return {**super().get_config(), "n_features": self.n_features}


def reads_sparse_rows(model: keras.Model) -> bool:
    """Whether ``model`` takes sparse ``[ids, values]`` inputs (models saved before took dense rows)."""
    return len(model.inputs) == 2


def predict_step(model: keras.Model) -> Callable:
    """``model``'s inference on one batch as a ``tf.function`` traced once, kept on the model as Keras keeps
    its own ``predict_function``.

    Keras's ``predict`` traces its step again for batch shapes it has not traced (the batch size, the
    non-zeros per row): on the sample corpus 3 of 4 calls on a model traced, each with TensorFlow's
    graph optimisation. An input signature of unknown dimensions makes it one trace per model object.
    It computes what ``predict`` computes, ``model(x, training=False)``.
    """
    step = getattr(model, "_one_trace_predict", None)
    if step is None:
        tf = tensorflow()
        if reads_sparse_rows(model):
            spec = {"ids": tf.TensorSpec([None, None, None], tf.int32),
                    "values": tf.TensorSpec([None, None, None], tf.float32)}
        else:  # a model saved before rows were sparse reads dense rows
            spec = tf.TensorSpec([None, None, model.inputs[0].shape[-1]], tf.float32)
        step = tf.function(lambda x: model(x, training=False), input_signature=[spec])
        model._one_trace_predict = step
    return step


def build_model(n_features: int, config: ModelConfig) -> keras.Model:
    """The first layer, ``num_layers`` x Bidirectional LSTM, then a per-line softmax, with Adam.

    The model reads each batch's sparse rows (``ids`` and ``values``). With ``input_projection`` > 0
    the first layer is an embedding bag of that width with a ReLU (:class:`SparseProjection`: a Dense
    layer on the row, computed from its non-zeros). With 0, as in the guide, the LSTMs read the row
    itself: :class:`DenseRows` expands the batch, so the model is the guide's exactly.
    """
    ids = keras.Input(shape=(None, None), dtype="int32", name="ids")
    values = keras.Input(shape=(None, None), dtype="float32", name="values")
    if config.input_projection:
        x = SparseProjection(config.input_projection, n_features, activation="relu",
                             name="projection")([ids, values])
    else:
        x = DenseRows(n_features, name="rows")([ids, values])
    for i in range(config.num_layers):
        x = keras.layers.Bidirectional(
            keras.layers.LSTM(config.hidden_size, return_sequences=True, dropout=config.dropout),
            name=f"bilstm_{i}",
        )(x)
    outputs = keras.layers.Dense(len(CLASSES), activation="softmax", name="classes")(x)
    model = keras.Model({"ids": ids, "values": values}, outputs, name="bilstm_line_classifier")
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=config.learning_rate),
        loss=WeightedCategoricalCrossentropy(weights_vector(config.class_weights)),
    )
    return model


class EpochScoring(keras.callbacks.Callback):
    """After every epoch: stop on a non-finite loss, score validation, record and report the epoch.

    ``score(model, stride)`` gives validation stats (``score`` is ``None`` where epochs are not scored:
    a refit, a unit run). Epochs before the last score windows ``window_size`` apart (cheap, enough for
    pruning); the last scores with ``prediction_stride``, as prediction does. ``epoch_hook(epoch, stats)``
    (stats ``None`` unscored) is where a study reports and prunes. ``history`` holds one dict per epoch.
    """

    def __init__(self, config: ModelConfig, score: Callable | None, epoch_hook: Callable | None = None):
        super().__init__()
        self.config, self.score, self.epoch_hook = config, score, epoch_hook
        self.history: list[dict] = []

    def on_epoch_begin(self, epoch, logs=None):
        self.t0 = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        config = self.config
        loss = float((logs or {}).get("loss", float("nan")))
        if not math.isfinite(loss):
            raise NonFiniteLossError(f"training loss became {loss} at epoch {epoch + 1}")
        train_s = time.perf_counter() - self.t0
        val_stride = config.prediction_stride if epoch + 1 == config.epochs else config.window_size
        stats = None
        if self.score is not None:
            # Scoring must not touch training: Keras advances the dropout seed state on predict too, so
            # without this the next epochs' dropout would depend on how many batches validation took.
            state = [(v, v.numpy()) for v in self.model.non_trainable_variables]
            stats = self.score(self.model, val_stride)
            for var, value in state:
                var.assign(value)
        entry = {"epoch": epoch + 1, "loss": loss, "train_seconds": train_s,
                 "seconds": time.perf_counter() - self.t0, "val": stats, "val_stride": val_stride}
        self.history.append(entry)
        if config.verbosity >= 1:
            scored = "" if stats is None else (
                f"val important_f1 {stats['important_f1']:.4f} (Nomenclature {stats['Nomenclature_f1']:.3f}, "
                f"Description {stats['Description_f1']:.3f}) ")
            logger.info(f"epoch {epoch + 1}/{config.epochs} loss {loss:.4f} {scored}{entry['seconds']:.1f}s")
        if self.epoch_hook is not None:
            self.epoch_hook(epoch, stats)


class ModelCache:
    """One compiled model, re-initialised for each training run of the same architecture.

    Building a model and tracing its training step cost more than a short trial's epochs, so a
    process's search trials, unit runs and refits share one cache (:attr:`.train.Prepared.models`) and
    reset its model for every run. Reuse is valid only while one run at a time trains (runs in one
    process run one after another): :meth:`get` resets and returns the same object as before, so save or evaluate a
    model before the next call. A reset restores every model variable (weights and the dropout
    seed state) and every optimizer variable (Adam moments, step counter) to their values right
    after the build, and sets the loss's class weights; the model then trains exactly as a fresh
    one would. Another seed builds a new model only to copy its initial values into the cached one
    (building takes a fraction of a second, tracing the steps again seconds). A config that differs
    outside :data:`.config.RUN_KEYS` and the seed (architecture, learning rate, any key added later)
    builds a new model.
    """

    def __init__(self) -> None:
        self.key: tuple | None = None
        self.model: keras.Model | None = None
        self._initial: list = []

    def get(self, n_features: int, config: ModelConfig) -> keras.Model:
        """A compiled model for ``config`` in its freshly built state (call after seeding Keras)."""
        key = (n_features,) + config.build_key
        if key != self.key and not (self.key and self._unseeded(self.key) == self._unseeded(key)):
            self.clear()
            model = build_model(n_features, config)
            model.loss.make_reweightable()
            model.optimizer.build(model.trainable_variables)  # its variables exist now, so they can be restored
            self._initial = [(v, v.numpy().copy())
                             for v in list(model.variables) + list(model.optimizer.variables)]
            self.key, self.model = key, model
            return model
        if key != self.key:  # another seed: a new model's initial values, in the model already traced
            fresh = build_model(n_features, config).variables
            cached = self.model.variables
            if [v.shape for v in fresh] != [v.shape for v in cached]:
                raise RuntimeError("a model built with another seed has other variables than the cached one")
            self._initial = [(v, f.numpy()) for v, f in zip(cached, fresh)] + self._initial[len(cached):]
            self.key = key
        for var, value in self._initial:
            var.assign(value)
        self.model.loss.set_class_weights(weights_vector(config.class_weights))
        self.model.stop_training = False
        return self.model

    @staticmethod
    def _unseeded(key: tuple) -> tuple:
        return tuple(item for item in key if not (isinstance(item, tuple) and item[0] == "seed"))

    def clear(self) -> None:
        """Drop the cached model; the next :meth:`get` builds one."""
        self.key, self.model, self._initial = None, None, []


def seed_run(seed: int) -> None:
    """Seed a training run as ``keras.utils.set_random_seed`` does, setting TensorFlow's global seed only
    when it changes.

    Setting it clears TensorFlow's kernel cache, so a cached model's traced training and prediction steps
    are instantiated again: about 1 s per run of a tiny model, more than one of its epochs. That
    seed only feeds the ``tf.data`` shuffle, whose op seed is explicit; Keras draws the model's own
    randomness (initialisers, dropout) from its seed generator, reset here, and the cached model's
    state restores the rest. ``test_reused_model_trains_exactly_like_a_fresh_one`` holds us to it.
    """
    from keras.src.backend.common import global_state
    from keras.src.random import seed_generator
    from keras.src.utils import rng_utils
    from tensorflow.python.eager import context

    if context.global_seed() != seed:
        keras.utils.set_random_seed(seed)
        return
    global_state.set_global_attribute(rng_utils.GLOBAL_RANDOM_SEED, seed)
    global_state.set_global_attribute(seed_generator.GLOBAL_SEED_GENERATOR, None)
    random.seed(seed)
    np.random.seed(seed)


def tensorflow():
    """The TensorFlow module, imported after the Keras backend is chosen (see the top of this module)."""
    import tensorflow as tf

    return tf


def load_model(path) -> keras.Model:
    """Load a saved ``.keras`` model in safe mode; the loss deserialises because it is registered."""
    return keras.saving.load_model(path, safe_mode=True)  # no lambda or arbitrary code from a shared folder
