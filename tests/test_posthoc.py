"""Post-hoc reweighting (the screen and threshold tuning), checked against plain numpy."""

import numpy as np
import pytest

from weight_tuner.metrics import compute_stats
from weight_tuner.posthoc import fit_adjustment, important_f1_batch, reweighted_predictions, sample_weights, screen


def random_case(seed=0, n=400):
    rng = np.random.default_rng(seed)
    y = rng.choice(3, size=n, p=[0.05, 0.2, 0.75])
    logits = rng.normal(size=(n, 3)) + 1.5 * np.eye(3)[y]
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return y, p


def test_reweighted_argmax_matches_numpy_reference():
    y, p = random_case()
    w = sample_weights(50, seed=3)
    got = reweighted_predictions(p, w)
    for k in range(len(w)):
        expected = np.array([np.argmax([w[k, c] * p[i, c] for c in range(3)]) for i in range(len(p))])
        assert (got[k] == expected).all()


def test_batched_important_f1_matches_compute_stats():
    y, p = random_case(1)
    w = sample_weights(20, seed=4)
    preds = reweighted_predictions(p, w)
    fast = important_f1_batch(y, preds)
    for k in range(len(w)):
        onehot = np.eye(3)[preds[k]]
        assert abs(fast[k] - compute_stats(y, onehot)["important_f1"]) < 1e-12
    assert np.allclose(screen(p, y, w, chunk=7), fast)


def test_unit_weights_reproduce_plain_argmax_and_tuning_never_loses_on_its_data():
    y, p = random_case(2)
    plain = compute_stats(y, p)["important_f1"]
    assert sample_weights(5)[0].tolist() == [1.0, 1.0, 1.0]
    assert abs(screen(p, y, np.ones((1, 3)))[0] - plain) < 1e-12
    w, score = fit_adjustment(p, y, n=500)
    assert score >= plain - 1e-12
    assert w[2] == 1.0 and w.shape == (3,)
    # a skewed model: boosting the rare class must help
    y2, p2 = random_case(3)
    p2 = p2 * np.array([0.2, 1.0, 1.0])
    p2 /= p2.sum(1, keepdims=True)
    w2, score2 = fit_adjustment(p2, y2, n=500)
    assert w2[0] > 1.0 and score2 > compute_stats(y2, p2)["important_f1"]


def test_screen_enqueues_top_k_and_tune_confirms_them(prepared, tmp_path):
    from optuna.trial import TrialState

    from weight_tuner.search.run import tune
    from weight_tuner.search.screen import screen_into_study
    from weight_tuner.space import StudyConfig

    storage = f"sqlite:///{tmp_path}/s.db"
    cfg = StudyConfig(model={"hidden_size": 6, "num_layers": 1, "epochs": 2, "batch_size": 16, "verbosity": 0,
                             "learning_rate": 0.01}, schemes=["unweighted"])
    tune(prepared, storage, "scr", 1, cfg)
    picked = screen_into_study(prepared, storage, "scr", samples=300, top_k=2)
    assert [p["rank"] for p in picked] == [1, 2] and picked[0]["screen_score"] >= picked[1]["screen_score"]
    study = tune(prepared, storage, "scr", 3, cfg)
    done = {t.user_attrs["scheme"]: t for t in study.get_trials(states=(TrialState.COMPLETE,))}
    assert {"screen_top1", "screen_top2"} <= set(done)
    assert done["screen_top1"].user_attrs["class_weights"] == picked[0]["class_weights"]


def test_bench_rows_and_markdown_on_the_sample_corpus(prepared, shared_study, tmp_path):
    import json

    from weight_tuner.bench import run_bench
    from weight_tuner.bench_report import MARK_END, MARK_START, write_outputs
    from weight_tuner.config import ModelConfig

    base = ModelConfig.from_dict({"hidden_size": 6, "num_layers": 1, "epochs": 2, "batch_size": 16,
                                  "learning_rate": 0.01})
    study = shared_study.study()  # read only: its tuned and recommended weights become rows
    decision = study.user_attrs["recommendation"]["decision"]
    result = run_bench(prepared, base, seeds=(0,), scaling=False, study=study)
    rows = result["rows"]
    assert {"tuned (shared)", f"recommended (shared): {decision}"} <= set(rows)
    assert {"unweighted", "guide_recommended_100_10_0.1", "inverse_frequency", "effective_number_0.99999",
            "unweighted + oversample x3", "threshold tuning on unweighted", "sequence rules on unweighted",
            "linear per-line (no context)"} <= set(rows)
    for row in rows.values():
        stats = row["runs"][0]["stats"]
        assert len(row["runs"]) == 1 and row["important_f1"]["mean"] == pytest.approx(stats["important_f1"])
        assert stats["important_f1"] == pytest.approx((stats["Nomenclature_f1"] + stats["Description_f1"]) / 2)
    speed = result["speed"]
    assert min(speed["bare_fit_seconds"], speed["reused_fit_seconds"], speed["trial_seconds"]) > 0
    assert len(speed["validation_seconds"]) == speed["epochs"] == base.epochs
    md = tmp_path / "b.md"
    md.write_text("# Benchmarks\n\nhand-written text\n")
    write_outputs(result, md, tmp_path / "b.json", "weight-tuner bench test")
    write_outputs(result, md, tmp_path / "b.json", "weight-tuner bench test")  # replaces, never duplicates
    text = md.read_text()
    assert text.count(MARK_START) == 1 and "hand-written text" in text and MARK_END in text
    assert "| threshold tuning on unweighted |" in text and "| recommended (shared): " in text
    assert "per-trial overhead" in text
    assert json.loads((tmp_path / "b.json").read_text())["seeds"] == [0]


def test_linear_baseline_learns_from_chunks(prepared, monkeypatch):
    from weight_tuner import bench

    monkeypatch.setattr(bench, "LINEAR_CHUNK", 500)  # several chunks per epoch, and a partial last one
    assert prepared.splits["train"].n % 500 and prepared.splits["train"].n > 2000
    stats, _ = bench._linear_baseline(prepared, seed=0)
    assert stats["lines"] == prepared.splits["test"].n
    assert stats["important_f1"] > 0.5  # an all-Misc model scores 0


def test_cross_fitted_thresholds_never_see_the_labels_they_are_scored_on():
    """Each half of a held-out fold is predicted with multipliers fitted on the other half: relabelling
    the odd chunks leaves their predictions unchanged (an in-sample fit would move them)."""
    from types import SimpleNamespace

    from weight_tuner.unitrun import cross_fitted_adjustment

    y, p = random_case(seed=4, n=600)
    offsets = np.arange(0, 601, 100)  # six chunks of 100 lines
    odd = np.zeros(600, dtype=bool)
    for i in range(1, 6, 2):
        odd[offsets[i]:offsets[i + 1]] = True
    before = cross_fitted_adjustment(p, SimpleNamespace(n=600, offsets=offsets, y=y), seed=0)
    relabelled = y.copy()
    relabelled[odd] = 0  # the odd chunks now claim to be all Nomenclature
    after = cross_fitted_adjustment(p, SimpleNamespace(n=600, offsets=offsets, y=relabelled), seed=0)
    np.testing.assert_array_equal(after[odd], before[odd])
    assert (after[~odd] != before[~odd]).any()  # the even chunks' multipliers were fitted on the new labels
    assert set(np.unique(before.sum(axis=1))) == {1.0}  # one-hot predictions
    one_chunk = SimpleNamespace(n=600, offsets=np.array([0, 600]), y=y)
    assert cross_fitted_adjustment(p, one_chunk) is p  # a single chunk: no honest fit, argmax kept
