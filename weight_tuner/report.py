"""Report stage: the trials table (pandas), best first, and plots written next to the study."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .errors import WeightTunerError
from .paths import artifacts_dir
from .study.recommend import candidates_table, decision_sentence
from .study.space import METRIC_NAME
from .study.storage import trial_score, tuned_study

SCORE = "user_attrs_val_important_f1"
COLUMNS = ["number", "state", SCORE, "user_attrs_scheme", "params_w_Nomenclature", "params_w_Description",
           "params_w_Misc", "params_window_size", "params_epochs", "params_learning_rate",
           "user_attrs_val_Nomenclature_f1", "user_attrs_val_Description_f1", "user_attrs_epochs_run",
           "user_attrs_seconds", "user_attrs_fail_reason"]


def trials_table(study) -> pd.DataFrame:
    """``study.trials_dataframe()`` trimmed to the useful columns, best validation important_f1 first."""
    df = study.trials_dataframe(attrs=("number", "state", "params", "user_attrs"))
    if df.empty:
        return df
    df = df[[c for c in COLUMNS if c in df.columns]]
    if SCORE in df:
        df = df.sort_values(SCORE, ascending=False, na_position="last")
    return df.rename(columns=lambda c: c.replace("user_attrs_val_", "val_").replace("user_attrs_", "")
                     .replace("params_", ""))


def write_plots(study, out_dir: Path) -> list[Path]:
    """Optimisation history, parameter importances, the weight map (and the Pareto front), as HTML."""
    import optuna.visualization as vis
    import plotly.express as px

    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WeightTunerError(f"cannot write plots to {out_dir}: {exc.strerror or exc}") from exc
    target = {} if len(study.directions) == 1 else {"target": trial_score, "target_name": METRIC_NAME}
    figures = {"optimization_history": lambda: vis.plot_optimization_history(study, **target),
               "param_importances": lambda: vis.plot_param_importances(study, **target)}
    if len(study.directions) > 1:
        figures["pareto_front"] = lambda: vis.plot_pareto_front(study)
    df = study.trials_dataframe(attrs=("number", "params", "user_attrs", "state"))
    done = df[df["state"] == "COMPLETE"] if not df.empty else df
    if not done.empty and "params_w_Nomenclature" in done and SCORE in done:
        figures["weight_map"] = lambda: px.scatter(
            done, x="params_w_Nomenclature", y="params_w_Description", color=SCORE, log_x=True, log_y=True,
            hover_data=["number", "user_attrs_scheme"], labels={SCORE: METRIC_NAME},
            title="Nomenclature weight x Description weight (relative to Misc), coloured by validation important_f1")
    rec = study.user_attrs.get("recommendation")
    if rec and len(rec["candidates"]) > 1:
        figures["paired_differences"] = lambda: paired_differences_figure(rec)
    written = []
    for name, make in figures.items():
        try:
            fig = make()
        except Exception as exc:  # e.g. importances need two completed trials with varying params
            print(f"skipped plot {name}: {exc}")
            continue
        path = out_dir / f"{name}.html"
        try:
            fig.write_html(str(path), include_plotlyjs="directory")
        except OSError as exc:
            raise WeightTunerError(f"cannot write {path}: {exc.strerror or exc}") from exc
        written.append(path)
    return written


def report(storage_url: str, study_name: str, plots: bool = True, out_dir: str | Path | None = None) -> pd.DataFrame:
    """Print the trials table, the recommendation and the test check; write the plots (into ``out_dir``,
    by default the study's artifacts folder)."""
    study = tuned_study(storage_url, study_name)
    table = trials_table(study)
    with pd.option_context("display.max_rows", 500, "display.width", 200, "display.max_columns", 20,
                           "display.float_format", "{:.4g}".format):
        print(table.to_string(index=False) if not table.empty else f"study {study_name!r} has no trials")
    rec = study.user_attrs.get("recommendation")
    if rec:
        print(f"\nconfirmation, paired against no weights over {rec['n_units']} units "
              f"({rec['folds']} folds x {rec['repeats']} repeats):")
        print(candidates_table(rec))
        print(f"Recommendation: {decision_sentence(rec)}")
    else:
        print("\nno recommendation yet: run `weight-tuner tune` to the end (it confirms the top candidates)")
    test = study.user_attrs.get("test_stats")
    if test and "recommended" in test:
        print(f"test split (scored once, after the decision): recommended "
              f"{test['recommended']['stats']['important_f1']:.4f}, unweighted "
              f"{test['unweighted']['stats']['important_f1']:.4f}")
    if plots and not table.empty:
        for path in write_plots(study, Path(out_dir) if out_dir else artifacts_dir(storage_url, study_name)):
            print(f"wrote {path}")
    return table


def paired_differences_figure(rec: dict):
    """Each candidate's mean paired difference to no weights, with its interval (a plotly figure)."""
    import plotly.graph_objects as go

    rows = rec["candidates"][1:]
    names = [r["candidate"] for r in rows]
    means = [r["diff"]["mean"] for r in rows]
    fig = go.Figure(go.Scatter(
        x=means, y=names, mode="markers",
        error_x={"type": "data", "symmetric": False, "array": [r["diff"]["ci_high"] - r["diff"]["mean"] for r in rows],
                 "arrayminus": [r["diff"]["mean"] - r["diff"]["ci_low"] for r in rows]}))
    fig.add_vline(x=0, line_dash="dash")
    fig.update_layout(title=f"important_f1 minus no weights, paired over {rec['n_units']} units, "
                            f"{int(round(rec['level'] * 100))}% intervals; decision: {rec['decision']}",
                      xaxis_title="difference in important_f1", yaxis={"autorange": "reversed"})
    return fig
