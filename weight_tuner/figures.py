"""Figures of a study, as static matplotlib figures: the report page and the notebook draw the same ones.

Static images survive every export (nbconvert's HTML, a page mailed to a colleague); the
interactive view of a study is optuna-dashboard. Each function takes the study (or the
recommendation) and returns a ``matplotlib.figure.Figure``, or ``None`` when there is nothing
to draw yet. Weights are shown as trained (normalised; see :func:`.model.normalise_weights`) and
as ratios to Misc, the numbers the dashboard's parameter panel shows.
"""

from __future__ import annotations

import base64
import html
import io
import textwrap
import warnings

import numpy as np
from optuna.trial import TrialState

from .config import CLASSES
from .notes import deployed_test
from .records import Recommendation
from .storage import stored_recommendation, trial_score

# Fewer completed trials than this and parameter importances are mostly noise: the figure says so.
IMPORTANCE_MIN_TRIALS = 20
DECISION_WORDS = {"weights": "use the class weights", "thresholds": "use no class weights, with thresholds",
                  "no_weights": "use no class weights"}


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
    n = len([t for t in done if t.params])  # a scheme outside the search space has no parameters to rank
    caveat = "" if n >= IMPORTANCE_MIN_TRIALS else f"\n(under {IMPORTANCE_MIN_TRIALS} trials: indicative only)"
    ax.set(xlabel="importance (PED-ANOVA, as in optuna-dashboard)",
           title=textwrap.fill(f"Parameter importances from the {n} completed trials with parameters", 50) + caveat)
    return fig


def weight_map(study):
    """Each completed trial at its trained weights' ratios to Misc, coloured by validation important_f1, labelled
    by trial number (trials with identical weights share a label), the confirmed candidates ringed."""
    done = [t for t in _complete(study) if t.user_attrs.get("class_weights_trained") or
            t.user_attrs.get("class_weights")]
    if not done:
        return None
    fig, ax = _figure(8.0, 5.6)
    w = [t.user_attrs.get("class_weights_trained") or t.user_attrs["class_weights"] for t in done]
    x = [v["Nomenclature"] / v["Misc"] for v in w]
    y = [v["Description"] / v["Misc"] for v in w]
    points = ax.scatter(x, y, c=[trial_score(t) for t in done], cmap="viridis", s=40, zorder=2)
    rec = stored_recommendation(study)
    confirmed = {r.trial for r in (rec.candidates if rec else ()) if r.kind == "weights"}
    ringed = [(xi, yi) for t, xi, yi in zip(done, x, y) if t.number in confirmed]
    if ringed:
        ax.scatter(*zip(*ringed), s=160, facecolors="none", edgecolors="crimson", linewidths=1.5, zorder=3,
                   label="confirmed against no weights")
        ax.legend(loc="lower right", fontsize=8)
    # One label per distinct weight vector: only trials that trained with the same weights share a point.
    groups: dict[tuple, list] = {}
    for t, xi, yi, wi in zip(done, x, y, w):
        groups.setdefault(tuple(f"{wi[c]:.6g}" for c in CLASSES), []).append((t, xi, yi))
    key = []
    labels = []
    for members in groups.values():
        t0, xi, yi = members[0]
        labels.append((" = ".join(f"#{t.number}" for t, _, _ in members), xi, yi))
        key += [f"#{t.number} {_names(t)}" for t, _, _ in members if t.user_attrs.get("scheme", "search") != "search"]
    ax.set(xscale="log", yscale="log", xlabel="Nomenclature / Misc", ylabel="Description / Misc",
           title="Weights as ratios to Misc (the dashboard's w_ parameters), by trial number")
    fig.colorbar(points, ax=ax, label="validation important_f1")
    if key:
        fig.text(0.01, 0.0, textwrap.fill("Named schemes: " + "; ".join(key), 120), fontsize=7, va="bottom")
        fig.get_layout_engine().set(rect=(0, 0.08, 1, 0.92))
    _place_labels(fig, ax, labels)  # last: the colorbar and the key move the axes
    return fig


# Where a point's label may go, in points from the point: right, left, above, below, then further out.
LABEL_OFFSETS = [(5, 3, "left"), (-5, 3, "right"), (5, -9, "left"), (-5, -9, "right"), (0, 8, "center"),
                 (0, -14, "center"), (12, 10, "left"), (-12, 10, "right"), (12, -16, "left"), (-12, -16, "right")]


def _place_labels(fig, ax, labels: list[tuple[str, float, float]]) -> None:
    """Label each point where the label stays inside the axes and overlaps no earlier label, no marker and no legend
    (the first free place of :data:`LABEL_OFFSETS`; the last one where none is free): labels printed on top of each
    other were unreadable."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw_without_rendering()  # the layout first: the points' places are final
    markers = [ax.transData.transform((x, y)) for _, x, y in labels]
    inside = ax.get_window_extent(renderer)
    taken: list = [ax.get_legend().get_window_extent(renderer)] if ax.get_legend() else []
    for text, x, y in labels:
        for dx, dy, ha in LABEL_OFFSETS:
            label = ax.annotate(text, (x, y), fontsize=7, xytext=(dx, dy), textcoords="offset points", ha=ha)
            box = label.get_window_extent(renderer).expanded(1.05, 1.1)
            free = not any(box.overlaps(other) for other in taken) and not any(
                box.x0 - 3 <= mx <= box.x1 + 3 and box.y0 - 3 <= my <= box.y1 + 3 for mx, my in markers) and (
                inside.x0 <= box.x0 and box.x1 <= inside.x1 and inside.y0 <= box.y0 and box.y1 <= inside.y1)
            if free or (dx, dy, ha) == LABEL_OFFSETS[-1]:
                taken.append(box)
                break
            label.remove()


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
    rec = stored_recommendation(study)
    chosen = [i for i, t in enumerate(done) if rec is not None and t.number == rec.trial]
    if chosen:  # the recommended trial (with no weights recommended: the unweighted trial)
        ax.plot(pts[chosen, 0], pts[chosen, 1], "*", markersize=16, color="crimson", zorder=3,
                label=f"recommended (trial {done[chosen[0]].number})")
    ax.set(xlabel="Nomenclature F1 (validation)", ylabel="Description F1 (validation)",
           title="Per-class trade-off (front trials numbered)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0))  # outside the axes: it hid points
    at: dict[tuple, list[int]] = {}  # tied trials share a point, and one label
    for i in front:
        at.setdefault(tuple(pts[i]), []).append(done[i].number)
    _place_labels(fig, ax, [(", ".join(f"#{n}" for n in numbers[:3]) + (f" +{len(numbers) - 3}" if len(numbers) > 3
                                                                         else ""), x, y)
                            for (x, y), numbers in at.items()])
    return fig


def paired_differences(rec: Recommendation | None):
    """Each candidate's mean paired difference to no weights, with its interval."""
    if not rec or not rec.challengers:
        return None
    rows = rec.challengers
    fig, ax = _figure(height=1.4 + 0.45 * len(rows))
    y = np.arange(len(rows))[::-1]
    means = np.array([r.diff.mean for r in rows])
    low = np.array([r.diff.ci_low for r in rows])
    high = np.array([r.diff.ci_high for r in rows])
    ax.errorbar(means, y, xerr=[means - low, high - means], fmt="o", capsize=4)
    ax.axvline(0, linestyle="--", color="grey")
    ax.set_yticks(y, [r.candidate for r in rows])
    ax.set(xlabel="important_f1 minus no weights",
           title=f"Each candidate vs no weights over {rec.n_units} paired units, {int(round(rec.level * 100))}% "
                 f"intervals\nDecision: {DECISION_WORDS.get(rec.decision, rec.decision)}")
    return fig


def confusion(matrix, title: str):
    """A confusion matrix (rows: true class) coloured by the share of each true class, with counts."""
    cm = np.asarray(matrix, dtype=float)
    share = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig, ax = _figure(5.8, 4.4)
    image = ax.imshow(share, vmin=0, vmax=1, cmap="Blues")
    for i in range(len(CLASSES)):
        for j in range(len(CLASSES)):
            ax.text(j, i, f"{share[i, j]:.2f}\n({int(cm[i, j])})", ha="center", va="center", fontsize=11,
                    color="white" if share[i, j] > 0.6 else "black")
    ax.set_xticks(range(len(CLASSES)), [f"predicted\n{c}" for c in CLASSES])
    ax.set_yticks(range(len(CLASSES)), CLASSES)
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label="share of the true class (row)")
    return fig


def confusion_of(rec, test: dict) -> tuple[list | None, str]:
    """The test split's confusion matrix of the model ``predict --study`` uses, with its title; for refits made
    before their matrix was kept, the search's single model's, titled as that."""
    deployed = deployed_test(rec, test) if rec else None
    if deployed and deployed["stats"] and "confusion_matrix" in deployed["stats"]:
        return (deployed["stats"]["confusion_matrix"],
                f"Deployed model ({deployed['kind']}), test split\n(rows: true class)")
    single = (test.get("recommended") or {}).get("stats") or {}
    if "confusion_matrix" in single:
        return single["confusion_matrix"], ("The search's single model (not the deployed one),\n"
                                            "test split (rows: true class)")
    return None, ""


def study_figures(study) -> dict:
    """Every figure of a study that can be drawn now, by name."""
    rec = stored_recommendation(study)
    test = study.user_attrs.get("test_stats") or {}
    made = {"paired_differences": paired_differences(rec), "history": history(study),
            "importances": importances(study), "weight_map": weight_map(study), "tradeoff": tradeoff(study)}
    matrix, title = confusion_of(rec, test)
    if matrix is not None:
        made["confusion_deployed"] = confusion(matrix, title)
    return {name: fig for name, fig in made.items() if fig is not None}


def png(fig) -> bytes:
    """The figure as PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def alt_text(fig) -> str:
    """A figure's alternative text: what it plots, from its titles and axis labels."""
    parts = []
    for ax in fig.axes:
        title = " ".join(ax.get_title().split())
        if title or ax.get_xlabel():
            parts.append(f"{title}{': ' if title else ''}{ax.get_ylabel() or 'values'} against {ax.get_xlabel()}"
                         if ax.get_xlabel() else title)
    return "Figure. " + "; ".join(p for p in parts if p) if parts else "Figure."


def _img(data: bytes, alt: str, attrs: str = "") -> str:
    """An ``<img>`` holding PNG ``data`` inline (base64), with its alternative text."""
    return f'<img {attrs}alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode("ascii")}">'


def img_tag(fig, name: str) -> str:
    """An ``<img>`` holding the figure inline (base64 PNG), so the page needs no other file."""
    return _img(png(fig), alt_text(fig), f'id="figure-{name}" ')


class Shown:
    """A figure as a notebook shows it: a PNG, and the same PNG as HTML with its alternative text (nbconvert's
    HTML prefers the HTML, so the exported page keeps the text; the lab template drops a PNG's alt)."""

    def __init__(self, fig):
        self.png, self.alt = png(fig), alt_text(fig)

    def _repr_png_(self):
        return self.png, {"alt": self.alt}

    def _repr_html_(self):
        return _img(self.png, self.alt)


def shown(fig) -> Shown | None:
    """What a notebook cell returns to show ``fig`` (:class:`Shown`); ``None`` for no figure."""
    return None if fig is None else Shown(fig)
