"""The loss, masking of padded steps, weights reaching the gradient, saving and learning."""

import json
import subprocess
import sys

import numpy as np
import pytest

from weight_tuner.config import CLASSES, ModelConfig
from weight_tuner.model import WeightedCategoricalCrossentropy, build_model

from conftest import tiny_config

tf = pytest.importorskip("tensorflow")


def numpy_loss(y_true, y_pred, weights=None):
    """The guide's formula, written independently: mean over real lines of -w[true] log p[true]."""
    y_true = y_true.reshape(-1, 3)
    p = np.clip(y_pred.reshape(-1, 3), 1e-7, 1 - 1e-7)
    real = y_true.sum(axis=1) > 0
    cls = y_true[real].argmax(axis=1)
    ce = -np.log(p[real][np.arange(real.sum()), cls])
    w = np.ones(3) if weights is None else np.asarray(weights)
    return float(np.mean(w[cls] * ce))


def random_batch(rng, batch=3, steps=6, pad_last=2):
    y = np.eye(3, dtype=np.float32)[rng.integers(0, 3, size=(batch, steps))]
    y[:, steps - pad_last :] = 0.0  # padded steps
    p = rng.dirichlet(np.ones(3), size=(batch, steps)).astype(np.float32)
    return y, p


@pytest.mark.parametrize("weights", [None, [100.0, 10.0, 0.1], [1.0, 3.0, 0.5]])
def test_loss_matches_numpy_reference(weights):
    rng = np.random.default_rng(0)
    y, p = random_batch(rng)
    loss = WeightedCategoricalCrossentropy(weights)(y, p)
    assert float(loss) == pytest.approx(numpy_loss(y, p, weights), rel=1e-5)


def test_padded_steps_add_no_loss():
    # SKOL labelled padding as Misc and counted it; here padding changes nothing.
    rng = np.random.default_rng(1)
    y, p = random_batch(rng, pad_last=0)
    pad_y = np.concatenate([y, np.zeros((3, 4, 3), np.float32)], axis=1)
    pad_p = np.concatenate([p, rng.dirichlet(np.ones(3), size=(3, 4)).astype(np.float32)], axis=1)
    for w in (None, [100.0, 10.0, 0.1]):
        loss_fn = WeightedCategoricalCrossentropy(w)
        assert float(loss_fn(pad_y, pad_p)) == pytest.approx(float(loss_fn(y, p)), rel=1e-6)


def sparse_batch(x):
    """Dense rows (batch, steps, features) as the model's sparse inputs: ids and values of the non-zeros."""
    from scipy import sparse

    from weight_tuner.rows import SparseRows

    b, w, f = x.shape
    rows = SparseRows.from_csr(sparse.csr_matrix(x.reshape(-1, f)), pad_row=False)
    rows = SparseRows(rows.indptr, rows.indices, rows.data.astype(np.float32), f)  # keep float32 values
    ids, values = rows.gather(np.arange(b * w).reshape(b, w))
    return {"ids": ids, "values": values}


@pytest.mark.parametrize("projection", [0, 6])
def test_padding_changes_no_prediction_of_a_real_line(projection):
    cfg = ModelConfig.from_dict({"hidden_size": 8, "num_layers": 2, "dropout": 0.0, "seed": 0,
                           "input_projection": projection})
    model = build_model(5, cfg)
    rng = np.random.default_rng(2)
    x = rng.normal(size=(1, 6, 5)).astype(np.float32)
    x[..., 0] = 1.0  # the bias feature every real line has
    padded = np.concatenate([x, np.zeros((1, 9, 5), np.float32)], axis=1)  # padding: rows without non-zeros
    a = model.predict(sparse_batch(x), verbose=0)
    b = model.predict(sparse_batch(padded), verbose=0)[:, :6]
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # and a padded step is masked, not read as a zero row: an unmasked LSTM would change later steps' outputs
    front = np.concatenate([np.zeros((1, 3, 5), np.float32), x], axis=1)
    np.testing.assert_allclose(model.predict(sparse_batch(front), verbose=0)[:, 3:], a, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dense_batch_columns", [8192, 0], ids=["batch expanded", "sparse product"])
def test_sparse_projection_equals_the_dense_projection_on_the_same_rows(prepared, monkeypatch, dense_batch_columns):
    """The embedding bag computes what a Dense layer computes on the dense row (features version 3),
    both when it expands the batch (narrow rows) and when it multiplies sparse (wide rows)."""
    import keras

    from weight_tuner import model
    from weight_tuner.model import SparseProjection

    monkeypatch.setattr(model, "DENSE_BATCH_COLUMNS", dense_batch_columns)

    split = prepared.splits["val"]
    rows = split.index[:40].reshape(4, 10)
    dense_x = split.rows.dense(rows)
    ids, values = split.rows.gather(rows)
    n = prepared.featurizer.n_features
    bag = SparseProjection(16, n, activation="relu")
    dense = keras.layers.Dense(16, activation="relu")
    dense.build((None, None, n))
    rng = np.random.default_rng(0)
    kernel, bias = rng.normal(size=(n, 16)).astype(np.float32), rng.normal(size=16).astype(np.float32)
    bag([ids, values])
    bag.set_weights([kernel, bias])
    dense.set_weights([kernel, bias])
    got, want = np.asarray(bag([ids, values])), np.asarray(dense(dense_x))
    assert (want > 0).mean() > 0.2  # the ReLU is not hiding everything
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    # the padding row reads as all zeros before the bias, so its output is relu(bias)
    pad_ids, pad_values = split.rows.gather(np.full((1, 2), split.rows.pad_row))
    assert not pad_values.any()
    np.testing.assert_allclose(np.asarray(bag([pad_ids, pad_values]))[0, 0], np.maximum(bias, 0), rtol=1e-6)


def _grads(model, x, y, weights):
    loss_fn = WeightedCategoricalCrossentropy(weights)
    with tf.GradientTape() as tape:
        loss = loss_fn(y, model(sparse_batch(x), training=False))
    return [g.numpy() for g in tape.gradient(loss, model.trainable_variables)]


def test_class_weights_reach_the_gradient():
    cfg = ModelConfig.from_dict({"hidden_size": 4, "num_layers": 1, "dropout": 0.0})
    model = build_model(3, cfg)
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 5, 3)).astype(np.float32)
    x[..., 0] = 1.0
    y = np.eye(3, dtype=np.float32)[rng.integers(0, 3, size=(2, 5))]
    plain = _grads(model, x, y, None)
    ones = _grads(model, x, y, [1.0, 1.0, 1.0])
    doubled = _grads(model, x, y, [2.0, 2.0, 2.0])
    skewed = _grads(model, x, y, [100.0, 10.0, 0.1])
    for g0, g1, g2 in zip(plain, ones, doubled):
        np.testing.assert_allclose(g0, g1, rtol=1e-6)
        np.testing.assert_allclose(2 * g0, g2, rtol=1e-4, atol=1e-7)
    assert any(not np.allclose(g0, g3) for g0, g3 in zip(plain, skewed))


def test_compiled_model_uses_the_configured_weights():
    cfg = ModelConfig.from_dict({"hidden_size": 4, "num_layers": 1,
                           "class_weights": {"Nomenclature": 7, "Description": 3, "Misc": 0.5}})
    model = build_model(3, cfg)
    assert model.loss.class_weights == [7.0, 3.0, 0.5]


def test_tiny_model_learns_above_majority_baseline(prepared):
    from weight_tuner.train import evaluate, train_model

    cfg = tiny_config(epochs=8)
    model, history = train_model(prepared, cfg)
    assert len(history) == 8
    test = evaluate(model, prepared.splits["test"], cfg)
    majority = max(test[f"{c}_support"] for c in CLASSES) / test["lines"]
    # The majority-class baseline predicts all Misc: important_f1 = 0.
    assert test["important_f1"] > 0.5
    assert test["accuracy"] > majority
    assert test["lines"] == prepared.splits["test"].n  # every test line scored once
    # Pruning checks score non-overlapping windows; the last epoch, the trial's result, scores
    # exactly as prediction does.
    assert [h["val_stride"] for h in history] == [cfg.window_size] * 7 + [cfg.prediction_stride]
    assert history[-1]["val"] == evaluate(model, prepared.splits["val"], cfg)


def test_prediction_is_traced_once_and_equals_keras_predict(prepared):
    """Every split and stride runs one traced step (Keras's predict traced again for each new batch shape),
    with exactly the probabilities Keras's own predict gives."""
    from weight_tuner.model import predict_step
    from weight_tuner.train import PREDICT_BATCH, make_dataset, predict_probs, train_model
    from weight_tuner.windows import build_windows, merge_window_probs

    cfg = tiny_config(epochs=1)
    model, _ = train_model(prepared, cfg, score_epochs=False)
    shapes = set()
    for name, stride in (("val", 10), ("val", 5), ("test", 5)):
        split = prepared.splits[name]
        windows = build_windows(split.offsets, cfg.window_size, stride, split.pad_index)
        keras_probs = model.predict(make_dataset(split, windows, PREDICT_BATCH, labels=False), verbose=0)
        shapes.add(keras_probs.shape)
        np.testing.assert_array_equal(predict_probs(model, split, cfg, stride),
                                      merge_window_probs(windows, keras_probs, split.n))
    assert len(shapes) == 3  # three batch shapes, which Keras's predict step is traced for in turn
    assert predict_step(model).experimental_get_tracing_count() == 1


def test_saved_model_predicts_identically_in_a_new_process(prepared, tmp_path):
    from weight_tuner.model import weights_vector
    from weight_tuner.train import predict_probs, train_model, trained_weights
    from weight_tuner.bundles import save_bundle

    cfg = tiny_config(epochs=1, class_weights={"Nomenclature": 20.0, "Description": 4.0, "Misc": 1.0})
    model, _ = train_model(prepared, cfg)
    trained = weights_vector(trained_weights(prepared, cfg))  # normalised: the same ratios, mean 1 over lines
    assert trained[0] / trained[2] == pytest.approx(20.0) and model.loss.class_weights == trained
    path = tmp_path / "m.keras"
    save_bundle(model, prepared.featurizer, cfg, path)
    split = prepared.splits["val"]
    expected = predict_probs(model, split, cfg)
    from scipy import sparse

    sparse.save_npz(tmp_path / "rows.npz", split.rows.csr(split.index[:-1]))
    script = f"""
import json, numpy as np
from scipy import sparse
from weight_tuner.rows import SparseRows
from weight_tuner.train import SplitData, predict_probs
from weight_tuner.bundles import load_bundle
model, feat, cfg = load_bundle({str(path)!r})
assert np.allclose(model.loss.class_weights, {trained!r}), model.loss.class_weights
rows = SparseRows.from_csr(sparse.load_npz({str(tmp_path / 'rows.npz')!r}))
offsets = np.array({json.dumps(split.offsets.tolist())})
split = SplitData.whole('val', rows, np.zeros(rows.n_rows - 1, dtype=np.int64), offsets, [])
np.save({str(tmp_path / 'out.npy')!r}, predict_probs(model, split, cfg))
"""
    subprocess.run([sys.executable, "-c", script], check=True, timeout=300)
    got = np.load(tmp_path / "out.npy")
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert (got.argmax(1) != 2).any()  # not silently all-Misc


def test_reused_model_trains_exactly_like_a_fresh_one(prepared, monkeypatch):
    from weight_tuner.model import ModelCache
    from weight_tuner.train import train_model

    cfg_a = tiny_config(epochs=2, dropout=0.3, class_weights={"Nomenclature": 9.0, "Description": 3.0, "Misc": 1.0})
    cfg_b = tiny_config(epochs=2, dropout=0.3)
    cache = ModelCache()
    model_a, fresh_a = train_model(prepared, cfg_a, cache=cache)
    model_b, fresh_b_after_a = train_model(prepared, cfg_b, cache=cache)  # the model trained with cfg_a, reset
    assert model_b is model_a
    _, fresh_b = train_model(prepared, cfg_b)  # no cache: a new model
    assert [h["loss"] for h in fresh_b_after_a] == pytest.approx([h["loss"] for h in fresh_b], rel=1e-5)
    assert fresh_b_after_a[-1]["val"]["important_f1"] == pytest.approx(fresh_b[-1]["val"]["important_f1"])
    # and the weights did reach the reused loss
    assert [h["loss"] for h in fresh_a] != pytest.approx([h["loss"] for h in fresh_b], rel=1e-3)
    # TensorFlow's seed is set again (clearing its caches) only when something changed it: the run is the same
    import tensorflow as tf

    calls = []
    monkeypatch.setattr(tf.random, "set_seed", lambda seed, real=tf.random.set_seed: calls.append(seed) or real(seed))
    _, again_b = train_model(prepared, cfg_b, cache=cache)
    tf.random.set_seed(cfg_b.seed + 1)
    _, reset_b = train_model(prepared, cfg_b, cache=cache)
    assert calls == [cfg_b.seed + 1, cfg_b.seed]
    assert [h["loss"] for h in again_b] == [h["loss"] for h in reset_b] == [h["loss"] for h in fresh_b_after_a]
    # Another seed: the cached model, with a new model's initial values and dropout seed, trains as that one
    cfg_c = cfg_b.replace(seed=cfg_b.seed + 5)
    reseeded, seeded_c = train_model(prepared, cfg_c, cache=cache)
    _, fresh_c = train_model(prepared, cfg_c)
    assert reseeded is model_a
    assert [h["loss"] for h in seeded_c] == [h["loss"] for h in fresh_c] != [h["loss"] for h in fresh_b]
    assert seeded_c[-1]["val"] == fresh_c[-1]["val"]


def test_model_cache_rebuilds_when_the_architecture_changes(prepared):
    import keras

    from weight_tuner.model import ModelCache

    n = prepared.featurizer.n_features
    cache = ModelCache()
    keras.utils.set_random_seed(0)
    first = cache.get(n, tiny_config())
    assert cache.get(n, tiny_config(class_weights={"Nomenclature": 2.0, "Description": 1.0, "Misc": 1.0})) is first
    for change in ({"hidden_size": 5}, {"num_layers": 2}, {"dropout": 0.1}, {"learning_rate": 0.02},
                   {"input_projection": 4}):
        other = cache.get(n, tiny_config(**change))
        assert other is not first, change
        assert cache.get(n, tiny_config()) is not other  # and back: rebuilt again
        first = cache.model
    assert cache.get(n + 1, tiny_config()) is not first  # another feature width
    first = cache.get(n, tiny_config())
    for change in ({"epochs": 3}, {"batch_size": 4}, {"window_size": 12}, {"oversample": 2}, {"verbosity": 1},
                   {"seed": 2}):
        assert cache.get(n, tiny_config(**change)) is first, change  # how it trains or starts, not what it is
    # A key the cache was never told about is part of the build key: it rebuilds, never reuses a stale model.
    import dataclasses

    from weight_tuner.config import ModelConfig

    future = dataclasses.make_dataclass("Future", [("future_key", int, 1)], bases=(ModelConfig,), frozen=True)
    later = future(**tiny_config().as_dict())
    assert ("future_key", 1) in later.build_key and later.build_key != tiny_config().build_key
    cache.clear()
    assert cache.model is None and cache.get(n, tiny_config()) is not first



def test_scoring_the_validation_split_leaves_training_untouched(prepared, monkeypatch):
    # Keras advances the dropout seed state on predict as well: without the snapshot around each
    # epoch's validation, the dropout of later epochs depended on how many batches validation took.
    from weight_tuner import train

    losses = []
    for batch in (512, 8):
        monkeypatch.setattr(train, "PREDICT_BATCH", batch)
        _, history = train.train_model(prepared, tiny_config(epochs=3, dropout=0.3))
        losses.append([h["loss"] for h in history])
    assert losses[0] == losses[1]
