"""The screen: rank thousands of weight vectors post hoc on the unweighted model, enqueue the best.

The enqueued trials are then trained like any other, so the screen proposes and training decides.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from ..config import CLASSES
from ..paths import model_path, models_dir
from ..posthoc import sample_weights, screen
from ..schemes import is_unweighted
from ..space import SearchSpace
from ..storage import check_same_data, tuned_study, unweighted_config

logger = logging.getLogger(__name__)


def screen_into_study(prepared, storage_url: str, study_name: str, samples: int = 5000, top_k: int = 5,
                      seed: int = 0) -> list[dict]:
    """Screen weight vectors on the unweighted model's validation probabilities; enqueue the top ``top_k``.

    Uses the study's saved unweighted model when there is one, else trains it with
    the study's model config. The enqueued trials confirm the screen by real training.
    """
    from ..train import predict_probs, train_model
    from ..bundles import load_bundle

    study = tuned_study(storage_url, study_name)
    attrs = study.user_attrs
    check_same_data(study, prepared, "the screen")
    space = SearchSpace.from_dict(attrs["search_space"])
    config = unweighted_config(study)
    models = models_dir(storage_url, study_name)
    unweighted = [t for t in study.trials if is_unweighted(t) and model_path(models, t.number).exists()]
    if unweighted:
        model, _, config = load_bundle(model_path(models, unweighted[0].number))
        logger.info(f"screen: using the unweighted model of trial {unweighted[0].number}")
    else:
        logger.info("screen: training the unweighted model")
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
    logger.info(f"screen: scored {samples} weight vectors in {samples / rate:.2f}s ({rate:.0f}/s); "
        f"unweighted argmax scores {scores[0]:.4f}")
    picked = []
    for rank, i in enumerate(np.argsort(-scores)[:top_k]):
        w = {c: float(weights[i, k]) for k, c in enumerate(CLASSES)}
        study.enqueue_trial(space.params_for(w), user_attrs={"scheme": f"screen_top{rank + 1}", "weights_given": w,
                                                             "screen_score": float(scores[i])})
        picked.append({"rank": rank + 1, "class_weights": w, "screen_score": float(scores[i])})
        logger.info(f"  enqueued screen_top{rank + 1}: " + ", ".join(f"{c} {w[c]:.3g}" for c in CLASSES)
            + f" (screen important_f1 {scores[i]:.4f})")
    return picked
