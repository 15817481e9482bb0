"""Metrics stage: per-class scores with the guide's metric names.

For each class C in Nomenclature, Description, Misc: ``C_precision``, ``C_recall``,
``C_f1``, ``C_support`` and ``C_loss`` (mean unweighted cross-entropy over lines
whose true class is C). Plus ``important_f1`` (mean of the Nomenclature and
Description F1, the objective), ``accuracy`` and ``confusion_matrix``.
"""

from __future__ import annotations

import numpy as np

from .config import CLASSES

EPSILON = 1e-7
IMPORTANT = ("Nomenclature", "Description")


def compute_stats(y_true: np.ndarray, probs: np.ndarray) -> dict:
    """Scores for integer labels ``y_true`` (n,) and class probabilities ``probs`` (n, 3)."""
    y_true = np.asarray(y_true, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    if probs.shape != (len(y_true), len(CLASSES)):
        raise ValueError(f"probs shape {probs.shape} does not match {len(y_true)} lines x {len(CLASSES)} classes")
    pred = probs.argmax(axis=1)
    k = len(CLASSES)
    confusion = np.zeros((k, k), dtype=np.int64)  # rows: true class, columns: predicted
    np.add.at(confusion, (y_true, pred), 1)
    ce = -np.log(np.clip(probs[np.arange(len(y_true)), y_true], EPSILON, 1 - EPSILON))
    stats: dict = {}
    for c, name in enumerate(CLASSES):
        tp = confusion[c, c]
        predicted = confusion[:, c].sum()
        support = confusion[c, :].sum()
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        stats[f"{name}_precision"] = float(precision)
        stats[f"{name}_recall"] = float(recall)
        stats[f"{name}_f1"] = float(f1)
        stats[f"{name}_support"] = int(support)
        stats[f"{name}_loss"] = float(ce[y_true == c].mean()) if support else float("nan")
    stats["important_f1"] = float(np.mean([stats[f"{c}_f1"] for c in IMPORTANT]))
    stats["accuracy"] = float((pred == y_true).mean()) if len(y_true) else 0.0
    stats["loss"] = float(ce.mean()) if len(y_true) else float("nan")
    stats["lines"] = int(len(y_true))
    stats["confusion_matrix"] = confusion.tolist()
    return stats


def format_stats_table(named: dict[str, dict]) -> str:
    """A plain-text table of per-class precision/recall/F1/support for several stat dicts."""
    rows = [f"{'split':<8}{'class':<14}{'precision':>10}{'recall':>9}{'f1':>8}{'support':>9}{'loss':>8}"]
    for split, st in named.items():
        for name in CLASSES:
            rows.append(f"{split:<8}{name:<14}{st[f'{name}_precision']:>10.4f}{st[f'{name}_recall']:>9.4f}"
                        f"{st[f'{name}_f1']:>8.4f}{st[f'{name}_support']:>9d}{st[f'{name}_loss']:>8.3f}")
        rows.append(f"{split:<8}{'important_f1':<14}{st['important_f1']:>35.4f}   accuracy {st['accuracy']:.4f}")
    return "\n".join(rows)
