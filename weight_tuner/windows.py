"""Windows stage: fixed-length windows over lines, built as arrays of line indices.

Windows never cross a chunk boundary. Steps past a chunk's end point at the
padding index (an all-zero feature row, an all-zero label row), so they are
masked in the model, carry zero loss and are never scored. No dense window
tensor is ever materialised: batches are gathered from the feature matrix.
"""

from __future__ import annotations

import numpy as np

from .config import CLASSES


def offsets_from_sizes(sizes) -> np.ndarray:
    """Chunk offsets (``[0, n1, n1 + n2, ...]``, int64) from chunk sizes."""
    return np.concatenate([[0], np.cumsum(np.asarray(sizes, dtype=np.int64))]).astype(np.int64)


def window_starts(n_lines: int, window: int, stride: int) -> np.ndarray:
    """Start offsets so that windows of ``window`` lines, ``stride`` apart, cover ``n_lines``."""
    if n_lines <= 0:
        return np.zeros(0, dtype=np.int64)
    last = max(n_lines - window, 0)
    starts = np.arange(0, last + 1, stride, dtype=np.int64)
    if starts[-1] < last:  # one more window, flush with the end, covers the tail
        starts = np.append(starts, last)
    return starts


def build_windows(offsets: np.ndarray, window: int, stride: int, pad_index: int) -> np.ndarray:
    """Windows of global line indices, shape ``(n_windows, window)``.

    ``offsets`` are the chunk boundaries in reading order (``len = n_chunks + 1``);
    positions past a chunk's end hold ``pad_index``.
    """
    rows = []
    for lo, hi in zip(offsets[:-1], offsets[1:]):
        n = int(hi - lo)
        for s in window_starts(n, window, stride):
            idx = lo + s + np.arange(window, dtype=np.int64)
            idx[idx >= hi] = pad_index
            rows.append(idx)
    if not rows:
        return np.zeros((0, window), dtype=np.int32)
    return np.stack(rows).astype(np.int32)


def label_table(y: np.ndarray) -> np.ndarray:
    """One-hot labels with one extra all-zero row at the end: the padding label."""
    table = np.zeros((len(y) + 1, len(CLASSES)), dtype=np.float32)
    table[np.arange(len(y)), y] = 1.0
    return table


def merge_window_probs(windows: np.ndarray, probs: np.ndarray, n_lines: int) -> np.ndarray:
    """Average overlapping window predictions per line; padded steps are dropped.

    Raises if any line was not covered by a window, so every line is scored exactly once.
    """
    flat_idx = windows.reshape(-1)
    flat_p = probs.reshape(-1, probs.shape[-1]).astype(np.float64)
    keep = flat_idx < n_lines
    sums = np.zeros((n_lines, probs.shape[-1]), dtype=np.float64)
    counts = np.zeros(n_lines, dtype=np.int64)
    np.add.at(sums, flat_idx[keep], flat_p[keep])
    np.add.at(counts, flat_idx[keep], 1)
    if n_lines and counts.min() == 0:
        missing = int(np.flatnonzero(counts == 0)[0])
        raise RuntimeError(f"line {missing} was covered by no prediction window")
    return (sums / counts[:, None]).astype(np.float32)


def oversample_windows(windows: np.ndarray, offsets: np.ndarray, y: np.ndarray, rare_class: int,
                       factor: int) -> np.ndarray:
    """Repeat ``factor`` times the windows of every chunk (document) that holds ``rare_class``.

    The guide's document-level oversampling: whole windows keep their reading order.
    """
    if factor <= 1 or len(windows) == 0:
        return windows
    chunk_of_window = np.searchsorted(offsets, windows[:, 0], side="right") - 1
    has_rare = np.array([(y[lo:hi] == rare_class).any() for lo, hi in zip(offsets[:-1], offsets[1:])])
    rare = windows[has_rare[chunk_of_window]]
    return np.concatenate([windows] + [rare] * (factor - 1))
