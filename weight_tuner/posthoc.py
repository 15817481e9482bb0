"""Post-hoc reweighting: the cheap competitor that needs no retraining, and the screen's scoring.

Given an unweighted model's probabilities ``p``, predicting ``argmax_c w_c * p_c``
is per-class threshold (logit-adjustment) tuning: ``log w_c`` is added to each
logit. Scoring thousands of such ``w`` on validation probabilities is fast, so it
can rank weight vectors before any retraining.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import CLASSES


def reweighted_predictions(probs: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``argmax_c w_c p_c`` for many weight vectors at once: ``(k, 3)`` weights -> ``(k, n)`` classes."""
    weights = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    return np.argmax(probs[None, :, :] * weights[:, None, :], axis=2)


def important_f1_batch(y: np.ndarray, preds: np.ndarray) -> np.ndarray:
    """important_f1 (mean of Nomenclature and Description F1) of each row of ``preds``, vectorised."""
    scores = np.zeros(len(preds))
    for c in (CLASSES.index("Nomenclature"), CLASSES.index("Description")):
        tp = ((preds == c) & (y[None, :] == c)).sum(axis=1)
        predicted = (preds == c).sum(axis=1)
        support = (y == c).sum()
        f1 = np.where(predicted + support > 0, 2 * tp / np.maximum(predicted + support, 1), 0.0)
        scores += f1 / 2
    return scores


def sample_weights(n: int, low: float = 0.1, high: float = 1000.0, seed: int = 0) -> np.ndarray:
    """``n`` weight vectors with Misc = 1 and the others log-uniform in ``[low, high]``; the first is (1, 1, 1)."""
    rng = np.random.default_rng(seed)
    w = np.ones((n, len(CLASSES)))
    w[:, :2] = np.exp(rng.uniform(np.log(low), np.log(high), size=(n, 2)))
    w[0] = 1.0
    return w


# Weight vectors x lines scored at once: bounds the temporary product (x 3 classes x 8 bytes = 24 MiB);
# 512 vectors at a time over a 25k-line fold had held 300 MB.
SCREEN_CELLS = 2**20


def screen(probs: np.ndarray, y: np.ndarray, weights: np.ndarray, chunk: int | None = None) -> np.ndarray:
    """important_f1 of every weight vector applied post hoc to ``probs`` (``chunk`` vectors at a time)."""
    chunk = chunk or max(1, SCREEN_CELLS // max(len(probs), 1))
    out = np.empty(len(weights))
    for lo in range(0, len(weights), chunk):
        out[lo : lo + chunk] = important_f1_batch(y, reweighted_predictions(probs, weights[lo : lo + chunk]))
    return out


def fit_adjustment(probs: np.ndarray, y: np.ndarray, n: int = 4000, seed: int = 0,
                   low: float = 0.05, high: float = 200.0) -> tuple[np.ndarray, float]:
    """Per-class multipliers that maximise important_f1 on (validation) probabilities; ``(w, score)``."""
    w = sample_weights(n, low, high, seed)
    scores = screen(probs, y, w)
    best = int(np.argmax(scores))
    return w[best], float(scores[best])


def apply_multipliers(probs: np.ndarray, multipliers: dict[str, float] | None) -> np.ndarray:
    """``probs`` re-weighted by per-class ``multipliers`` (a thresholds decision) and renormalised per line;
    unchanged when there are none. Its argmax is :func:`reweighted_predictions`'s."""
    if not multipliers:
        return probs
    scaled = probs * np.array([multipliers[c] for c in CLASSES], dtype=probs.dtype)
    return scaled / scaled.sum(axis=1, keepdims=True)


def adjusted_predictions(fit_probs: np.ndarray, fit_y: np.ndarray, probs: np.ndarray,
                         seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Fit multipliers on ``(fit_probs, fit_y)`` (:func:`fit_adjustment`) and apply them to ``probs``:
    ``(predicted classes, multipliers)``. The fit and the scored lines should be disjoint."""
    w, _ = fit_adjustment(fit_probs, fit_y, seed=seed)
    return reweighted_predictions(probs, w)[0], w


ADAPT_CHOICES = ("file", "folder")  # what one class-balance estimate covers at prediction time


def adapt_priors(probs: np.ndarray, train_prior: np.ndarray, max_iter: int = 200,
                 tol: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """Posteriors re-weighted to the class balance of the text being predicted, estimated without labels.

    The EM procedure of Saerens, Latinne and Decaestecker (2002): the new prior is the mean of the
    adjusted posteriors, and the posteriors are scaled by new prior / training prior, until the prior
    stops moving. Returns ``(adjusted probabilities, estimated prior)``. When the mean posterior
    already equals ``train_prior`` the first step is a fixed point and nothing changes.
    """
    probs = np.asarray(probs, dtype=np.float64)
    train_prior = np.asarray(train_prior, dtype=np.float64)
    if len(probs) == 0:
        return probs, train_prior
    prior = train_prior.copy()
    adjusted = probs
    for _ in range(max_iter):
        scaled = probs * (prior / train_prior)
        adjusted = scaled / scaled.sum(axis=1, keepdims=True)
        new = adjusted.mean(axis=0)
        converged = np.abs(new - prior).max() < tol
        prior = new
        if converged:
            break
    return adjusted, prior


@dataclass(frozen=True)
class Calibration:
    """Bias-corrected temperature scaling: ``softmax(log p / temperature + biases)``."""

    temperature: float
    biases: tuple[float, ...]

    def as_dict(self) -> dict:
        """The form stored in a study (user attrs are JSON)."""
        return {"temperature": self.temperature, "biases": list(self.biases)}

    @staticmethod
    def from_dict(stored: dict) -> "Calibration":
        """The calibration :meth:`as_dict` stored."""
        return Calibration(float(stored["temperature"]), tuple(float(b) for b in stored["biases"]))


def calibrated_mean(models, split, calibration: Calibration | None) -> np.ndarray:
    """The per-line probabilities of several ``(model, config)`` pairs on ``split``, each calibrated first, then
    averaged: how every ensemble is scored (the confirmation's members, the refits, ``predict``). ``models`` may be a
    generator, so that one model at a time is loaded."""
    from .train import predict_probs

    return np.mean([apply_calibration(predict_probs(model, split, config), calibration) for model, config in models],
                   axis=0)


def apply_calibration(probs: np.ndarray, calibration: Calibration | None) -> np.ndarray:
    """``probs`` recalibrated by ``calibration`` (unchanged without one), in their dtype; each line still
    sums to 1."""
    if calibration is None:
        return probs
    logits = np.log(np.clip(np.asarray(probs, dtype=np.float64), 1e-12, 1.0)) / calibration.temperature
    logits = logits + np.asarray(calibration.biases)
    logits -= logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.asarray(probs).dtype)


def fit_calibration(probs: np.ndarray, y: np.ndarray) -> Calibration | None:
    """The temperature and per-class biases that minimise the log loss of ``probs`` on labels ``y``.

    Bias-corrected temperature scaling (Alexandari, Kundaje and Shrikumar 2020). Fit it on lines the
    model did not train on. The log loss is convex in (1 / temperature, biases); the first class's
    bias is fixed at 0. ``None`` when a class is absent from ``y``: its bias would run off to -inf.
    """
    from scipy.optimize import minimize

    z = np.log(np.clip(np.asarray(probs, dtype=np.float64), 1e-12, 1.0))
    if not np.bincount(np.asarray(y), minlength=z.shape[1]).all():
        return None
    onehot = np.eye(z.shape[1])[np.asarray(y)]

    def loss(theta):
        logits = theta[0] * z
        logits[:, 1:] += theta[1:]
        logits -= logits.max(axis=1, keepdims=True)
        log_q = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        q = np.exp(log_q)
        diff = (q - onehot) / len(z)
        grad = np.concatenate([[np.sum(diff * z)], diff[:, 1:].sum(axis=0)])
        return -np.sum(onehot * log_q) / len(z), grad

    theta = minimize(loss, np.r_[1.0, np.zeros(z.shape[1] - 1)], jac=True, method="L-BFGS-B",
                     bounds=[(1e-3, None)] + [(None, None)] * (z.shape[1] - 1)).x
    return Calibration(1.0 / float(theta[0]), (0.0, *map(float, theta[1:])))


def mean_calibration(fits: list[Calibration]) -> Calibration:
    """One calibration from several fits (an ensemble's members): the mean of their parameters,
    taken on 1 / temperature and the biases, in which the calibrated logits are linear."""
    inverse = float(np.mean([1.0 / f.temperature for f in fits]))
    return Calibration(1.0 / inverse, tuple(float(b) for b in np.mean([f.biases for f in fits], axis=0)))
