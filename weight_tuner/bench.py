"""Benchmark stage: does tuning pay for itself? Every row uses the same split, model config and epochs.

Rows: unweighted, the guide's 100/10/0.1, inverse frequency (balanced has the same ratios,
so it trains identically), effective number (beta 0.99999), post-hoc threshold
(logit-adjustment) tuning of the unweighted model, the best weights of a study and what the
study recommends, and a per-line linear model without context.
Each is trained with several seeds and scored on the test split.
"""

from __future__ import annotations

import logging
import resource
import time
from dataclasses import dataclass, field

import numpy as np

from .config import CLASSES, ModelConfig
from .records import Recommendation
from .metrics import compute_stats
from .paths import DEFAULT_CACHE_DIR
from .posthoc import adjusted_predictions, sample_weights, screen
from .predict import apply_sequence_rules, one_hot_probs, tune_sequence_threshold
from .sample import SAMPLE_DOCS

SCHEMES = ("unweighted", "guide_recommended_100_10_0.1", "inverse_frequency", "effective_number_0.99999")


logger = logging.getLogger(__name__)


def _summary(values: list[float]) -> dict:
    return {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
            "values": [float(v) for v in values]}


LINEAR_EPOCHS = 15
LINEAR_CHUNK = 8192  # sparse rows per partial_fit


def _linear_baseline(prepared, seed: int) -> tuple[dict, float]:
    """A per-line logistic regression on the same features, no context (SKOL's production model)."""
    from sklearn.linear_model import SGDClassifier

    t0 = time.perf_counter()
    train, test = prepared.splits["train"], prepared.splits["test"]
    clf = SGDClassifier(loss="log_loss", alpha=1e-5, random_state=seed)
    rng = np.random.default_rng(seed)
    classes = np.arange(len(CLASSES))
    for _ in range(LINEAR_EPOCHS):
        order = rng.permutation(train.n)
        for start in range(0, train.n, LINEAR_CHUNK):
            rows = np.sort(order[start:start + LINEAR_CHUNK])
            clf.partial_fit(train.rows.csr(train.index[rows]), train.y[rows], classes=classes)
    probs = np.concatenate([clf.predict_proba(test.rows.csr(test.index[s:min(s + LINEAR_CHUNK, test.n)]))
                            for s in range(0, test.n, LINEAR_CHUNK)])
    return compute_stats(test.y, probs), time.perf_counter() - t0


def tuned_weights_from_study(study) -> tuple[dict, list]:
    """The best weights of a loaded study, and every completed trial's (weights, val important_f1)."""
    from .storage import completed_trials, trial_score

    done = [t for t in completed_trials(study) if t.user_attrs.get("class_weights")]
    best = max(done, key=trial_score)
    return best.user_attrs["class_weights"], [(t.user_attrs["class_weights"], trial_score(t)) for t in done]


def bare_fit_seconds(prepared, config: ModelConfig, cache=None) -> float:
    """Wall time of a bare ``model.fit`` on the same data pipeline: the floor a trial is compared with.

    The model is built (and its training step traced) inside the timing, as a plain script would;
    with a ``cache`` (:class:`.model.ModelCache`) holding the trials' model, that model is
    re-initialised and fitted instead, isolating a trial's extra work.
    """
    from .model import build_model, seed_run
    from .train import training_data

    seed_run(config.seed)
    _, ds = training_data(prepared, config)
    t0 = time.perf_counter()
    if cache is not None:
        model = cache.get(prepared.featurizer.n_features, config)
    else:
        model = build_model(prepared.featurizer.n_features, config)
    model.fit(ds, epochs=config.epochs, verbose=0, shuffle=False)
    return time.perf_counter() - t0


@dataclass
class BenchRow:
    """One row of the benchmark table: how its model is obtained, and its runs (one per seed).

    ``kind``: ``trained`` (a BiLSTM trained with ``weights`` and ``extra`` config keys), ``posthoc``
    (computed from the unweighted model's probabilities by ``method``), or ``linear`` (the per-line
    baseline). ``runs`` hold each seed's test stats and seconds.
    """

    kind: str
    weights: dict | None = None
    extra: dict = field(default_factory=dict)
    method: str | None = None
    runs: list[dict] = field(default_factory=list)


def bench_rows(schemes: dict, study_name: str | None = None, tuned: dict | None = None,
               recommendation: Recommendation | None = None) -> dict[str, BenchRow]:
    """The rows to run, in table order: the fixed schemes, a study's best (``tuned``) and recommended
    weights, oversampling, the two post-hoc methods and the linear baseline."""
    rows = {name: BenchRow("trained", schemes[name]) for name in SCHEMES}
    if tuned is not None:
        rows[f"tuned ({study_name})"] = BenchRow("trained", tuned)
    if recommendation and recommendation.decision == "weights":
        rows[f"recommended ({study_name}): weights"] = BenchRow("trained", recommendation.class_weights)
    rows["unweighted + oversample x3"] = BenchRow("trained", schemes["unweighted"], extra={"oversample": 3})
    rows["threshold tuning on unweighted"] = BenchRow("posthoc", method="thresholds")
    rows["sequence rules on unweighted"] = BenchRow("posthoc", method="sequence rules")
    rows["linear per-line (no context)"] = BenchRow("linear")
    return rows


def _posthoc_runs(p_val, p_test, val, test, seed: int, seconds: float, started: float) -> dict[str, dict]:
    """Each post-hoc method's run on one seed's unweighted model (trained in ``seconds``): fitted on
    validation, scored on test. Threshold tuning's seconds add its own, since ``started``."""
    pred, w = adjusted_predictions(p_val, val.y, p_test, seed=seed)
    adjusted = {"seed": seed, "stats": compute_stats(test.y, one_hot_probs(pred)),
                "seconds": seconds + time.perf_counter() - started, "multipliers": dict(zip(CLASSES, map(float, w)))}
    threshold, _ = tune_sequence_threshold(p_val, val.y)
    return {
        "thresholds": adjusted,
        "sequence rules": {"seed": seed, "seconds": seconds, "threshold": threshold,
                           "stats": compute_stats(test.y, one_hot_probs(apply_sequence_rules(p_test, threshold)))},
    }


def run_bench(prepared, base_config: ModelConfig, seeds=(0, 1, 2), study=None, scaling: bool = True) -> dict:
    """Train and score every row for every seed; return the raw numbers. ``study``: a loaded tuned
    study whose best and recommended weights become rows too."""
    from .model import ModelCache
    from .schemes import warm_start_schemes
    from .storage import stored_recommendation
    from .train import evaluate, predict_probs, train_model

    study_name, tuned, trials, recommendation = None, None, [], None
    if study is not None:  # read once: the rows, the screen's ranking and the recommendation's row
        study_name, recommendation = study.study_name, stored_recommendation(study)
        tuned, trials = tuned_weights_from_study(study)
    rows = bench_rows(warm_start_schemes(prepared.class_counts["train"]), study_name, tuned, recommendation)
    val, test = prepared.splits["val"], prepared.splits["test"]
    speed: dict = {}
    screen_info: dict = {}
    cache = ModelCache()
    for seed in seeds:
        for name, row in rows.items():
            if row.kind == "linear":
                stats, secs = _linear_baseline(prepared, seed)
                row.runs.append({"seed": seed, "stats": stats, "seconds": secs})
                logger.info(f"seed {seed} {name}: test important_f1 {stats['important_f1']:.4f} ({secs:.0f}s)")
            if row.kind != "trained":
                continue  # post-hoc rows: filled in with the unweighted model below
            cfg = base_config.replace(seed=seed, class_weights=row.weights, verbosity=0, **row.extra)
            t0 = time.perf_counter()
            model, history = train_model(prepared, cfg, cache=cache)
            stats = evaluate(model, test, cfg)
            secs = time.perf_counter() - t0
            row.runs.append({"seed": seed, "stats": stats, "seconds": secs,
                             "epoch_train_seconds": [h["train_seconds"] for h in history]})
            logger.info(f"seed {seed} {name}: test important_f1 {stats['important_f1']:.4f} ({secs:.0f}s)")
            if name != "unweighted":
                continue
            t1 = time.perf_counter()
            p_val, p_test = predict_probs(model, val, cfg), predict_probs(model, test, cfg)
            posthoc = _posthoc_runs(p_val, p_test, val, test, seed, secs, t1)
            for other, other_row in rows.items():
                if other_row.kind == "posthoc":
                    other_row.runs.append(posthoc[other_row.method])
                    logger.info(f"seed {seed} {other}: test important_f1 "
                                f"{posthoc[other_row.method]['stats']['important_f1']:.4f}")
            if seed == seeds[0]:
                screen_info = _screen_report(p_val, val.y, trials)
                speed = _speed_report(prepared, cfg, history, cache)
    if recommendation and recommendation.decision != "weights":
        # No weights, or thresholds on the unweighted model: the same runs as that row.
        same = "unweighted" if recommendation.decision == "no_weights" else "threshold tuning on unweighted"
        rows[f"recommended ({study_name}): {recommendation.decision}"] = rows[same]
    result = {"config": base_config.as_dict(), "seeds": list(seeds), "data": prepared.meta() | {"split": None},
              "rows": {name: _summarised(row) for name, row in rows.items() if row.runs},
              "speed": speed, "screen": screen_info}
    if scaling:
        result["scaling"] = _scaling(base_config)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def _summarised(row: BenchRow) -> dict:
    """A row's JSON: its weights, mean, std and values of each score and of the seconds, and the runs."""
    return {"weights": row.weights,
            **{k: _summary([r["stats"][k] for r in row.runs]) for k in ("Nomenclature_f1", "Description_f1",
                                                                        "important_f1")},
            "seconds": _summary([r["seconds"] for r in row.runs]),
            "runs": row.runs}


def _screen_report(p_val, y_val, trials) -> dict:
    """Screening speed, and how well the screen's ranking predicts the trained ranking (Spearman)."""
    from scipy.stats import spearmanr

    w = sample_weights(5000)
    t0 = time.perf_counter()
    screen(p_val, y_val, w)
    per_second = len(w) / (time.perf_counter() - t0)
    out = {"vectors_per_second": per_second, "lines": int(len(y_val))}
    if len(trials) >= 3:
        ws = np.array([[tw[c] for c in CLASSES] for tw, _ in trials])
        predicted = screen(p_val, y_val, ws)
        trained = np.array([v for _, v in trials])
        rho = spearmanr(predicted, trained)
        out.update({"spearman": float(rho.statistic), "p_value": float(rho.pvalue), "trials": len(trials)})
    return out


def _study_trial_seconds(prepared, cfg: ModelConfig) -> tuple[float, float]:
    """Run one unweighted trial exactly as ``tune`` does (SQLite storage, reports, saved model) in a
    throw-away study; return the wall time of the ``tune`` call and the trial's own, as Optuna records it."""
    import tempfile

    import optuna

    from .search.run import tune
    from .space import StudyConfig

    study_config = StudyConfig(model=cfg.as_dict(), pruner={"type": "none"}, schemes=["unweighted"])
    with tempfile.TemporaryDirectory() as tmp:
        storage = f"sqlite:///{tmp}/speed.db"
        t0 = time.perf_counter()
        study = tune(prepared, storage, "speed", 1, study_config, heartbeat=10)
        wall = time.perf_counter() - t0
        trial = study.trials[0]
        if trial.state != optuna.trial.TrialState.COMPLETE:
            raise RuntimeError(f"the timing trial ended {trial.state.name}")
        return wall, (trial.datetime_complete - trial.datetime_start).total_seconds()


def _speed_report(prepared, cfg: ModelConfig, history: list, cache, rounds: int = 2) -> dict:
    """A trial as ``tune`` runs it against a bare ``model.fit`` of the same model on the same arrays.

    The runs are interleaved ``rounds`` times and the fastest of each kept, the usual way to
    take the machine's noise out of a timing.
    """
    train = prepared.splits["train"]
    runs: dict[str, list[float]] = {"trial": [], "study_call": [], "bare_fit": [], "reused_fit": []}
    for _ in range(rounds):
        call, trial = _study_trial_seconds(prepared, cfg)
        runs["study_call"].append(call)
        runs["trial"].append(trial)
        runs["bare_fit"].append(bare_fit_seconds(prepared, cfg))
        runs["reused_fit"].append(bare_fit_seconds(prepared, cfg, cache=cache))
    trial_s, bare, reused = min(runs["trial"]), min(runs["bare_fit"]), min(runs["reused_fit"])
    epoch_train = [h["train_seconds"] for h in history]
    validation = [h["seconds"] - h["train_seconds"] for h in history]
    windows_per_epoch = int(np.ceil(train.n / cfg.stride))
    return {"trial_seconds": trial_s, "bare_fit_seconds": bare, "overhead_fraction": (trial_s - bare) / trial_s,
            "reused_fit_seconds": reused, "beyond_fit_fraction": (trial_s - reused) / trial_s,
            "runs": runs, "validation_seconds": validation, "epochs": len(history),
            "mean_epoch_train_seconds": float(np.mean(epoch_train)),
            "lines_per_second": train.n / float(np.mean(epoch_train[1:] or epoch_train)),
            "windows_per_epoch": windows_per_epoch}


def _scaling(base_config: ModelConfig) -> list[dict]:
    """Trial wall time on the sample corpus at 1x, 2x and 4x its default size (a new model each time)."""
    from . import train as train_mod

    out = []
    for factor in (1, 2, 4):
        prepared = train_mod.prepare(None, sample_docs=SAMPLE_DOCS * factor, cache_dir=None)
        cfg = base_config.replace(verbosity=0)
        t0 = time.perf_counter()
        _, history = train_mod.train_model(prepared, cfg)
        out.append({"factor": factor, "documents": SAMPLE_DOCS * factor,
                    "train_lines": prepared.splits["train"].n, "trial_seconds": time.perf_counter() - t0,
                    "later_epoch_seconds": float(np.mean([h["seconds"] for h in history[1:]]))})
        logger.info(f"scaling x{factor}: {out[-1]['trial_seconds']:.1f}s")
    return out


def _transfer_rows(prepared, base_config: ModelConfig, seeds, recommendation: Recommendation | None, cache) -> dict:
    """Unweighted BiLSTM, the recommended configuration and the linear baseline on one split, mean ± std over
    ``seeds``."""
    return _summaries(_transfer_runs(prepared, base_config, seeds, recommendation, cache))


def _summaries(runs: dict[str, list[dict]]) -> dict:
    return {name: {k: _summary([r[k] for r in rs]) for k in ("Nomenclature_f1", "Description_f1", "important_f1")}
            for name, rs in runs.items()}


def _transfer_runs(prepared, base_config: ModelConfig, seeds, recommendation: Recommendation | None,
                   cache) -> dict[str, list[dict]]:
    """The test stats of each row's model on one split, one per seed."""
    from .train import evaluate, predict_probs, train_model

    runs: dict[str, list[dict]] = {"unweighted": [], "linear per-line (no context)": []}
    decision = recommendation.decision if recommendation else None
    if decision:
        runs[f"recommended: {decision}"] = []
    val, test = prepared.splits["val"], prepared.splits["test"]
    for seed in seeds:
        cfg = base_config.replace(seed=seed, class_weights=None, verbosity=0)
        model, _ = train_model(prepared, cfg, cache=cache)
        unweighted = evaluate(model, test, cfg)
        runs["unweighted"].append(unweighted)
        if decision == "no_weights":
            runs["recommended: no_weights"].append(unweighted)
        elif decision == "thresholds":
            pred, _ = adjusted_predictions(predict_probs(model, val, cfg), val.y, predict_probs(model, test, cfg),
                                           seed=seed)
            runs["recommended: thresholds"].append(compute_stats(test.y, one_hot_probs(pred)))
        elif decision == "weights":
            wcfg = cfg.replace(class_weights=recommendation.class_weights)
            runs["recommended: weights"].append(evaluate(train_model(prepared, wcfg, cache=cache)[0], test, wcfg))
        runs["linear per-line (no context)"].append(_linear_baseline(prepared, seed)[0])
        logger.info(f"seed {seed}: test important_f1 unweighted {unweighted['important_f1']:.4f}, linear "
                    f"{runs['linear per-line (no context)'][-1]['important_f1']:.4f}")
    return runs


def run_transfer(data_dir, base_config: ModelConfig, seeds=(0, 1, 2), by: str = "journal",
                 recommendation: Recommendation | None = None, cache_dir=DEFAULT_CACHE_DIR,
                 split_seed: int = 0) -> dict | None:
    """Train on all but one group (journal), test on that group, for every group; and the chunk split beside it.

    The rows are the unweighted model, the ``recommendation``'s configuration (when given) and the
    linear baseline, mean ± std over ``seeds``. ``None`` when the corpus holds fewer than two groups;
    a flat folder (no groups at all) is a :class:`.errors.DataError`.
    """
    from . import corpus
    from .model import ModelCache
    from .train import prepare

    docs, _ = corpus.read_corpus(data_dir)
    groups = sorted({corpus.group_of(d.doc_id, by) for d in docs})
    if len(groups) < 2:
        return None
    model_cache = ModelCache()
    settings = {"chunk split": {}, **{f"test on {g}": {"split_by": by, "test_groups": [g]} for g in groups}}
    out = {"by": by, "groups": groups, "seeds": list(seeds), "config": base_config.as_dict(), "settings": {}}
    for name, split_args in settings.items():
        logger.info(f"transfer: {name}")
        # One setting's features in memory at a time.
        prepared = prepare(data_dir, split_seed=split_seed, cache_dir=cache_dir, **split_args)
        out["settings"][name] = {"split_by": prepared.split_spec,
                                 "lines": {k: prepared.splits[k].n for k in ("train", "val", "test")},
                                 "rows": _transfer_rows(prepared, base_config, seeds, recommendation, model_cache)}
        del prepared  # before the next setting's features are built
    volumes = sorted({corpus.group_of(d.doc_id, "volume") for d in docs})
    if by == "journal" and len(volumes) >= 3:
        out["settings"][HELD_OUT_VOLUME] = _held_out_volumes(data_dir, base_config, seeds, recommendation, cache_dir,
                                                             model_cache)
    held = [v for k, v in out["settings"].items() if k.startswith("test on ")]
    out["mean_of_directions"] = {row: float(np.mean([h["rows"][row]["important_f1"]["mean"] for h in held]))
                                 for row in held[0]["rows"]}
    return out


HELD_OUT_VOLUME = "held-out volume (one drawn per seed)"


def _held_out_volumes(data_dir, base_config: ModelConfig, seeds, recommendation, cache_dir, model_cache) -> dict:
    """New volumes of known journals: for each seed, one volume drawn as the test split (and one for validation,
    ``--split-by volume --split-seed SEED``), the model trained on the others with that seed."""
    from .train import prepare

    runs: dict[str, list[dict]] = {}
    tests, lines = [], []
    for seed in seeds:
        prepared = prepare(data_dir, split_seed=seed, cache_dir=cache_dir, split_by="volume")
        tests += prepared.split_spec["test_groups"]
        lines.append({k: prepared.splits[k].n for k in ("train", "val", "test")})
        for name, rs in _transfer_runs(prepared, base_config, [seed], recommendation, model_cache).items():
            runs.setdefault(name, []).extend(rs)
        del prepared
    return {"split_by": {"by": "volume", "test_groups": tests},
            "lines": {k: int(round(np.mean([n[k] for n in lines]))) for k in ("train", "val", "test")},
            "rows": _summaries(runs)}


