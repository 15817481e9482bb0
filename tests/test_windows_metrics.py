"""Windows from line indices, merging of overlapping predictions, and the metrics."""

import numpy as np
import pytest

from weight_tuner.metrics import compute_stats
from weight_tuner.windows import build_windows, label_table, merge_window_probs, window_starts


@pytest.mark.parametrize("n,window,stride", [(1, 5, 2), (5, 5, 5), (17, 5, 5), (17, 5, 2), (23, 15, 5)])
def test_windows_cover_every_line(n, window, stride):
    starts = window_starts(n, window, stride)
    covered = np.zeros(n, dtype=int)
    for s in starts:
        covered[s : min(s + window, n)] += 1
    assert covered.min() >= 1


def test_windows_follow_reading_order_and_never_cross_chunks():
    offsets = np.array([0, 7, 10])  # chunk A: lines 0..6, chunk B: 7..9
    win = build_windows(offsets, window=4, stride=4, pad_index=10)
    for row in win:
        real = row[row != 10]
        assert np.all(np.diff(real) == 1)  # consecutive lines, in order
        assert np.all(real < 7) or np.all(real >= 7)
    # chunk B has 3 lines: one window, padded once
    assert [list(r) for r in win if 7 in r] == [[7, 8, 9, 10]]


def test_label_table_padding_row_is_zero():
    table = label_table(np.array([0, 2, 1]))
    assert table.shape == (4, 3)
    assert table[-1].sum() == 0 and np.all(table[:3].sum(axis=1) == 1)


def test_merge_averages_overlaps_and_drops_padding():
    windows = np.array([[0, 1, 2], [2, 3, 4]])  # 4 is padding for n_lines=4
    probs = np.zeros((2, 3, 3), dtype=np.float32)
    probs[0, :, 0] = 1.0
    probs[1, :, 1] = 1.0
    merged = merge_window_probs(windows, probs, n_lines=4)
    assert merged.shape == (4, 3)
    np.testing.assert_allclose(merged[2], [0.5, 0.5, 0.0])
    np.testing.assert_allclose(merged[3], [0.0, 1.0, 0.0])
    with pytest.raises(RuntimeError, match="covered by no"):
        merge_window_probs(np.array([[0, 1]]), probs[:1, :2], n_lines=3)


def test_metrics_against_hand_counts():
    y = np.array([0, 0, 1, 1, 2, 2, 2, 2])
    pred = np.array([0, 2, 1, 1, 2, 2, 1, 2])
    probs = np.full((8, 3), 0.1)
    probs[np.arange(8), pred] = 0.8
    st = compute_stats(y, probs)
    assert st["Nomenclature_precision"] == 1.0 and st["Nomenclature_recall"] == 0.5
    assert st["Description_precision"] == pytest.approx(2 / 3) and st["Description_recall"] == 1.0
    assert st["Nomenclature_f1"] == pytest.approx(2 / 3)
    assert st["Description_f1"] == pytest.approx(0.8)
    assert st["important_f1"] == pytest.approx((2 / 3 + 0.8) / 2)
    assert st["Misc_support"] == 4 and st["accuracy"] == pytest.approx(6 / 8)
    assert st["confusion_matrix"] == [[1, 0, 1], [0, 2, 0], [0, 1, 3]]
    # per-class loss: mean unweighted cross-entropy over lines of that class
    assert st["Nomenclature_loss"] == pytest.approx(-(np.log(0.8) + np.log(0.1)) / 2)


def test_all_misc_predictions_score_zero_important_f1():
    y = np.array([0, 1, 2, 2])
    probs = np.tile([0.0, 0.0, 1.0], (4, 1))
    assert compute_stats(y, probs)["important_f1"] == 0.0
