"""Figures of a study, as static matplotlib figures: the report page and the notebook draw the same ones.

Static images survive every export (nbconvert's HTML, a page mailed to a colleague); the
interactive view of a study is optuna-dashboard. Each function takes the study (or the
recommendation) and returns a ``matplotlib.figure.Figure``, or ``None`` when there is nothing
to draw yet. Weights are shown as trained (normalised; see :func:`.model.normalise_weights`) and
as ratios to Misc, the numbers the dashboard's parameter panel shows.
"""

from __future__ import annotations

import base64
import io
import textwrap
import warnings

import numpy as np
from optuna.trial import TrialState

from .config import CLASSES
from .study.storage import stored_recommendation, trial_score

# Fewer completed trials than this and parameter importances are mostly noise: the figure says so.
IMPORTANCE_MIN_TRIALS = 20


def _figure(width: float = 6.4, height: float = 4.2):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.add_subplot()


def _complete(study):
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


def _names(trial) -> str:
    return " = ".join(trial.user_attrs.get("schemes") or [trial.user_attrs.get("scheme", "search")])


def history(study):
    """Validation important_f1 of each completed trial, by trial number, with the best so far."""
    done = sorted(_complete(study), key=lambda t: t.number)
    if not done:
        return None
    fig, ax = _figure()
    x = [t.number for t in done]
    y = [trial_score(t) for t in done]
    ax.plot(x, y, "o", label="trial")
    ax.step(x, np.maximum.accumulate(y), where="post", label="best so far")
    ax.set_xlim(min(x) - 0.5, max(x) + 0.5)  # finished trials only, not the queue
    ax.set(xlabel="trial", ylabel="validation important_f1", title="Optimisation history")
    ax.legend(loc="lower right")
    return fig


def importances(study):
    """Importances of the sampled parameters for validation important_f1 with PED-ANOVA, the evaluator
    optuna-dashboard uses (so both views show the same ranking), titled with the trials they rest on."""
    import optuna

    done = _complete(study)
    if len(done) < 2:
        return None
    try:
        with warnings.catch_warnings():  # its "few trials" and "low target" warnings: the title says so instead
            warnings.simplefilter("ignore", UserWarning)
            # PED-ANOVA ranks for low targets: the score is negated, as optuna-dashboard does for maximize.
            imp = optuna.importance.get_param_importances(
                study, target=lambda t: -trial_score(t), evaluator=optuna.importance.PedAnovaImportanceEvaluator())
    except (RuntimeError, ValueError):  # no parameter varies across the completed trials
        return None
    if not imp:
        return None
    fig, ax = _figure(height=1.2 + 0.5 * len(imp))
    names = list(imp)[::-1]
    ax.barh(names, [imp[n] for n in names])
    caveat = "" if len(done) >= IMPORTANCE_MIN_TRIALS else f"\n(under {IMPORTANCE_MIN_TRIALS} trials: indicative only)"
    ax.set(xlabel="importance (PED-ANOVA, as in optuna-dashboard)",
           title=f"Parameter importances from {len(done)} completed trials{caveat}")
    return fig


def weight_map(study):
    """Each completed trial at its trained weights' ratios to Misc, coloured by validation important_f1."""
    done = [t for t in _complete(study) if t.user_attrs.get("class_weights_trained") or
            t.user_attrs.get("class_weights")]
    if not done:
        return None
    fig, ax = _figure(9.5, 4.8)
    w = [t.user_attrs.get("class_weights_trained") or t.user_attrs["class_weights"] for t in done]
    x = [v["Nomenclature"] / v["Misc"] for v in w]
    y = [v["Description"] / v["Misc"] for v in w]
    points = ax.scatter(x, y, c=[trial_score(t) for t in done], cmap="viridis", s=40)
    # Schemes get a number at their point and their names in a key beside the plot: names written at
    # the points overlapped wherever schemes have close ratios. Points within 0.1 decades share a number.
    labels: list[tuple[float, float, list[str]]] = []
    for t, xi, yi in zip(done, x, y):
        if t.user_attrs.get("scheme", "search") == "search":
            continue
        near = next((lab for lab in labels if abs(np.log10(lab[0] / xi)) < 0.1 and abs(np.log10(lab[1] / yi)) < 0.1),
                    None)
        if near is None:
            labels.append((xi, yi, [_names(t)]))
        else:
            near[2].append(_names(t))
    for k, (xi, yi, _) in enumerate(labels, start=1):
        ax.annotate(str(k), (xi, yi), fontsize=8, xytext=(4, 2), textcoords="offset points")
    ax.set(xscale="log", yscale="log", xlabel="Nomenclature / Misc", ylabel="Description / Misc",
           title="Weights as ratios to Misc\n(the dashboard's w_ parameters)")
    fig.colorbar(points, ax=ax, label="validation important_f1", location="left", pad=0.12)
    if labels:
        from matplotlib.lines import Line2D

        names = [textwrap.fill(f"{k}: {' = '.join(n)}", 38, subsequent_indent="    ")
                 for k, (_, _, n) in enumerate(labels, start=1)]
        ax.legend([Line2D([], [], linestyle="none")] * len(names), names, loc="upper left", bbox_to_anchor=(1.02, 1.0),
                  handlelength=0, handletextpad=0, fontsize=7, title="schemes", title_fontsize=8)
    return fig


def tradeoff(study):
    """Nomenclature F1 against Description F1 (validation), with the Pareto front of the two."""
    done = [t for t in _complete(study) if "val_Nomenclature_f1" in t.user_attrs]
    if not done:
        return None
    pts = np.array([[t.user_attrs["val_Nomenclature_f1"], t.user_attrs["val_Description_f1"]] for t in done])
    front = [i for i, p in enumerate(pts) if not any((q >= p).all() and (q > p).any() for q in pts)]
    front.sort(key=lambda i: pts[i, 0])
    fig, ax = _figure()
    ax.plot(pts[:, 0], pts[:, 1], "o", alpha=0.6, label="trial")
    ax.plot(pts[front, 0], pts[front, 1], "-o", label="Pareto front")
    ax.set(xlabel="Nomenclature F1 (validation)", ylabel="Description F1 (validation)",
           title="Per-class trade-off")
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0))  # outside the axes: it hid points
    return fig


def paired_differences(rec: dict | None):
    """Each candidate's mean paired difference to no weights, with its interval."""
    if not rec or len(rec["candidates"]) < 2:
        return None
    rows = rec["candidates"][1:]
    fig, ax = _figure(height=1.4 + 0.45 * len(rows))
    y = np.arange(len(rows))[::-1]
    means = np.array([r["diff"]["mean"] for r in rows])
    low = np.array([r["diff"]["ci_low"] for r in rows])
    high = np.array([r["diff"]["ci_high"] for r in rows])
    ax.errorbar(means, y, xerr=[means - low, high - means], fmt="o", capsize=4)
    ax.axvline(0, linestyle="--", color="grey")
    ax.set_yticks(y, [r["candidate"] for r in rows])
    ax.set(xlabel="important_f1 minus no weights",
           title=f"Paired over {rec['n_units']} units, {int(round(rec['level'] * 100))}% intervals; "
                 f"decision: {rec['decision']}")
    return fig


def confusion(matrix, title: str):
    """A confusion matrix (rows: true class) coloured by the share of each true class, with counts."""
    cm = np.asarray(matrix, dtype=float)
    share = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig, ax = _figure(5.8, 4.4)
    image = ax.imshow(share, vmin=0, vmax=1, cmap="Blues")
    for i in range(len(CLASSES)):
        for j in range(len(CLASSES)):
            ax.text(j, i, f"{share[i, j]:.2f}\n({int(cm[i, j])})", ha="center", va="center", fontsize=8,
                    color="white" if share[i, j] > 0.6 else "black")
    ax.set_xticks(range(len(CLASSES)), [f"predicted\n{c}" for c in CLASSES])
    ax.set_yticks(range(len(CLASSES)), CLASSES)
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label="share of the true class (row)")
    return fig


def study_figures(study) -> dict:
    """Every figure of a study that can be drawn now, by name."""
    rec = stored_recommendation(study)
    test = study.user_attrs.get("test_stats") or {}
    made = {"paired_differences": paired_differences(rec), "history": history(study),
            "importances": importances(study), "weight_map": weight_map(study), "tradeoff": tradeoff(study)}
    if "recommended" in test and "confusion_matrix" in test["recommended"]["stats"]:
        made["confusion_recommended"] = confusion(test["recommended"]["stats"]["confusion_matrix"],
                                                  "Recommended model, test split\n(rows: true class)")
    return {name: fig for name, fig in made.items() if fig is not None}


def png(fig) -> bytes:
    """The figure as PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def img_tag(fig, name: str) -> str:
    """An ``<img>`` holding the figure inline (base64 PNG), so the page needs no other file."""
    data = base64.b64encode(png(fig)).decode("ascii")
    return f'<img id="figure-{name}" alt="{name}" src="data:image/png;base64,{data}">'
