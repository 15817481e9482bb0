"""The model's own Keras layers: reading a batch's sparse rows (:class:`SparseProjection`, :class:`DenseRows`)
and the backward LSTM's view of a window (:class:`ReverseLines`). Each is registered as Keras-serialisable,
so a saved ``.keras`` model loads with them (:mod:`.model` builds the model from them)."""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")  # before Keras is imported: it picks its backend then

import keras  # noqa: E402
from keras import ops  # noqa: E402


def tensorflow():
    """The TensorFlow module, imported after the Keras backend is chosen (see the top of this module)."""
    import tensorflow as tf

    return tf


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
        out.set_shape([None, inputs[0].shape[1], self.units])  # the window's static length, for unrolling
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
        rows = tf.reshape(rows, tf.stack([shape[0], shape[1], tf.constant(self.n_features, tf.int64)]))
        rows.set_shape([None, inputs[0].shape[1], self.n_features])  # the window's static length, for unrolling
        return rows

    def compute_mask(self, inputs, previous_mask=None):
        return _padding_mask(inputs[1])

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0][:2]) + (self.n_features,)

    def get_config(self):
        return {**super().get_config(), "n_features": self.n_features}


@keras.saving.register_keras_serializable(package="weight_tuner")
class ReverseLines(keras.layers.Layer):
    """The window's lines in reverse order, its padding mask reversed with them: the backward LSTM's view.

    Keras's ``Bidirectional`` is not used because an unrolled backward LSTM there masks its outputs with the
    mask in forward order (Keras 3.15.1's TensorFlow ``rnn``), which corrupts real lines next to padding;
    ``test_bilstm_computes_what_keras_bidirectional_computes`` holds this layer pair to the loop's result.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, inputs):
        return ops.flip(inputs, axis=1)

    def compute_mask(self, inputs, previous_mask=None):
        return None if previous_mask is None else ops.flip(previous_mask, axis=1)
