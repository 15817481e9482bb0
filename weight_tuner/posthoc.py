"""Post-hoc reweighting: the cheap competitor that needs no retraining, and the screen.

Given an unweighted model's probabilities ``p``, predicting ``argmax_c w_c * p_c``
is per-class threshold (logit-adjustment) tuning: ``log w_c`` is added to each
logit. Scoring thousands of such ``w`` on validation probabilities is fast, so it
can rank weight vectors before any retraining.
"""

from __future__ import annotations

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


def screen(probs: np.ndarray, y: np.ndarray, weights: np.ndarray, chunk: int = 512) -> np.ndarray:
    """important_f1 of every weight vector applied post hoc to ``probs``."""
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


def adjusted_predictions(fit_probs: np.ndarray, fit_y: np.ndarray, probs: np.ndarray,
                         seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Fit multipliers on ``(fit_probs, fit_y)`` (:func:`fit_adjustment`) and apply them to ``probs``:
    ``(predicted classes, multipliers)``. The fit and the scored lines should be disjoint."""
    w, _ = fit_adjustment(fit_probs, fit_y, seed=seed)
    return reweighted_predictions(probs, w)[0], w


def screen_into_study(prepared, storage_url: str, study_name: str, samples: int = 5000, top_k: int = 5,
                      seed: int = 0, log=print) -> list[dict]:
    """Screen weight vectors on the unweighted model's validation probabilities; enqueue the top ``top_k``.

    Uses the study's saved unweighted model when there is one, else trains it with
    the study's model config. The enqueued trials confirm the screen by real training.
    """
    import time

    from .study import (SearchSpace, StudyError, artifacts_dir, load_existing_study, model_path)
    from .train import load_bundle, predict_probs, train_model
    from .config import validate_config

    study = load_existing_study(storage_url, study_name)
    attrs = study.user_attrs
    if attrs.get("data_fingerprint") != prepared.fingerprint:
        raise StudyError(f"study {study_name!r} was run on other data ({attrs.get('source')})")
    space = SearchSpace.from_dict(attrs["search_space"])
    config = validate_config(dict(attrs["model_config"], class_weights=None))
    unweighted = [t for t in study.trials if t.user_attrs.get("scheme") == "unweighted"
                  and model_path(artifacts_dir(storage_url, study_name) / "models", t.number).exists()]
    if unweighted:
        model, _, config = load_bundle(model_path(artifacts_dir(storage_url, study_name) / "models",
                                                  unweighted[0].number))
        log(f"screen: using the unweighted model of trial {unweighted[0].number}")
    else:
        log("screen: training the unweighted model")
        model, _ = train_model(prepared, config)
    val = prepared.splits["val"]
    probs = predict_probs(model, val, config)
    rng_low = min(space.nomenclature[0], space.description[0])
    rng_high = max(space.nomenclature[1], space.description[1])
    weights = sample_weights(samples, rng_low, rng_high, seed)
    if space.misc:
        weights[1:, 2] = np.exp(np.random.default_rng(seed + 1).uniform(*np.log(space.misc), size=samples - 1))
    t0 = time.perf_counter()
    scores = screen(probs, val.y, weights)
    rate = samples / (time.perf_counter() - t0)
    log(f"screen: scored {samples} weight vectors in {samples / rate:.2f}s ({rate:.0f}/s); "
        f"unweighted argmax scores {scores[0]:.4f}")
    picked = []
    for rank, i in enumerate(np.argsort(-scores)[:top_k]):
        w = {c: float(weights[i, k]) for k, c in enumerate(CLASSES)}
        study.enqueue_trial(space.params_for(w), user_attrs={"scheme": f"screen_top{rank + 1}", "weights_given": w,
                                                             "screen_score": float(scores[i])})
        picked.append({"rank": rank + 1, "class_weights": w, "screen_score": float(scores[i])})
        log(f"  enqueued screen_top{rank + 1}: " + ", ".join(f"{c} {w[c]:.3g}" for c in CLASSES)
            + f" (screen important_f1 {scores[i]:.4f})")
    return picked
