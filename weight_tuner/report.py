"""Report stage: the trials table (pandas), best first, and plots written next to the study."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .study import METRIC_NAME, artifacts_dir, load_existing_study

VALUE = f"value_{METRIC_NAME}"  # trials_dataframe names the value column after the metric name
COLUMNS = ["number", "state", VALUE, "user_attrs_scheme", "params_w_Nomenclature", "params_w_Description",
           "params_w_Misc", "user_attrs_val_Nomenclature_f1", "user_attrs_val_Description_f1",
           "user_attrs_epochs_run", "user_attrs_seconds"]


def trials_table(study) -> pd.DataFrame:
    """``study.trials_dataframe()`` trimmed to the useful columns, best first."""
    df = study.trials_dataframe(attrs=("number", "state", "value", "params", "user_attrs"))
    if df.empty:
        return df
    df = df[[c for c in COLUMNS if c in df.columns]].sort_values(VALUE, ascending=False, na_position="last")
    return df.rename(columns=lambda c: c.replace("user_attrs_val_", "").replace("user_attrs_", "")
                     .replace("params_", "").replace(VALUE, METRIC_NAME))


def write_plots(study, out_dir: Path) -> list[Path]:
    """Optimisation history, parameter importances and the weight map, as HTML (plotly)."""
    import optuna.visualization as vis
    import plotly.express as px

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    figures = {"optimization_history": lambda: vis.plot_optimization_history(study),
               "param_importances": lambda: vis.plot_param_importances(study)}
    df = study.trials_dataframe(attrs=("number", "value", "params", "user_attrs", "state"))
    done = df[df["state"] == "COMPLETE"] if not df.empty else df
    if not done.empty and "params_w_Nomenclature" in done:
        figures["weight_map"] = lambda: px.scatter(
            done, x="params_w_Nomenclature", y="params_w_Description", color=VALUE, log_x=True, log_y=True,
            hover_data=["number", "user_attrs_scheme"], labels={VALUE: METRIC_NAME},
            title="Nomenclature weight x Description weight (relative to Misc), coloured by validation important_f1")
    for name, make in figures.items():
        try:
            fig = make()
        except Exception as exc:  # e.g. importances need two completed trials with varying params
            print(f"skipped plot {name}: {exc}")
            continue
        path = out_dir / f"{name}.html"
        fig.write_html(str(path), include_plotlyjs="directory")
        written.append(path)
    return written


def report(storage_url: str, study_name: str, plots: bool = True) -> pd.DataFrame:
    """Print the trials table and the test verdict; write the plots."""
    study = load_existing_study(storage_url, study_name)
    table = trials_table(study)
    with pd.option_context("display.max_rows", 500, "display.width", 200, "display.max_columns", 20,
                           "display.float_format", "{:.4g}".format):
        print(table.to_string(index=False) if not table.empty else f"study {study_name!r} has no trials")
    test = study.user_attrs.get("test_stats")
    if test:
        print(f"\ntest split (never seen by the search): best trial {test['trial']} important_f1 "
              f"{test['stats']['important_f1']:.4f}")
        if "unweighted" in test:
            print(f"unweighted baseline trial {test['unweighted']['trial']}: "
                  f"{test['unweighted']['stats']['important_f1']:.4f}")
        print(test.get("verdict", ""))
    if plots and not table.empty:
        for path in write_plots(study, artifacts_dir(storage_url, study_name)):
            print(f"wrote {path}")
    return table
