"""Report stage: the trials table (pandas), best first, and one self-contained HTML page of the study.

The page holds the decision and what to paste, the candidates with their intervals, per-class
test scores, the trials table and the figures of :mod:`.figures` (inline PNG), so it opens
anywhere, offline, as one file.
"""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd

from . import formats as fmt
from .config import CLASSES
from .errors import WeightTunerError
from .notes import (
    SMALL_TEST_CAUTION,
    TEST_ROWS,
    candidates_table,
    decision_sentence,
    deployed_sentence,
    deployed_test,
    paste_snippet,
    units_phrase,
)
from .paths import artifacts_dir, atomic_write_bytes
from .records import Recommendation
from .space import METRIC_NAME
from .storage import stored_recommendation, tuned_study

SCORE = METRIC_NAME  # the trials table's score column
# A cell never wraps (an interval split over two lines misreads); a wide table scrolls in its box, never cut.
TABLE_STYLE = ("<style>table.data{border-collapse:collapse;font-size:13px}table.data td,table.data th{padding:2px 8px;"
               "border-bottom:1px solid #ddd;white-space:nowrap;text-align:right}div.scroll{overflow-x:auto;"
               "max-width:100%}</style>")
GLOSSARY_TERMS = {
    "important_f1": "the mean of the Nomenclature F1 and the Description F1; Misc is not in it.",
    "unit": "one (repeat, fold) of the confirmation: every candidate is trained on the same training folds and "
            "scored on the same held-out fold, so their scores pair up unit by unit.",
    "r0f1": "a unit's name: repeat 0, fold 1.",
    "held-out fold": "the part of the non-test lines a unit scores on, never trained on in that unit.",
    "N / D / M": "class weights in class order: Nomenclature / Description / Misc, as trained (their mean over "
                 "the training lines is 1).",
    "vs no weights": "a candidate's score minus the unweighted model's, unit by unit, averaged.",
    "95% interval": "where the true difference lies with 95% confidence; it is widened for the overlap between "
                    "units' training data (the corrected resampled t of Nadeau and Bengio). A recommendation "
                    "needs the whole interval above 0.",
    "thresholds": "no class weights, but per-class multipliers on the unweighted model's probabilities, fitted on "
                  "held-out lines after training.",
    "stopped early (racing)": "a candidate that could no longer end with an interval above 0, whatever its "
                              "remaining units scored, was not trained on them.",
    "deployed model": "what predict --study uses: refits (the recommended configuration trained again on every "
                      "non-test line), else the confirmation's models averaged; probabilities are calibrated "
                      "(a temperature and a bias per class, fitted on held-out folds) before they are averaged.",
    "search's single model": "the model one trial of the search trained on its training split: the Best Trial of "
                             "the dashboard is one of these, scored on one validation split.",
    "temperature": "the calibration's divisor of a model's scores before the softmax: above 1 makes it less "
                   "confident, below 1 more.",
    "Step (dashboard)": "an epoch: the validation score after each epoch of a trial.",
    "PED-ANOVA": "how much each weight parameter explains the scores (the importance figure; optuna-dashboard's).",
    "Pareto front": "the trials no other trial beats on both Nomenclature F1 and Description F1.",
}
GLOSSARY = "<dl>" + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in GLOSSARY_TERMS.items()) + "</dl>"
PAGE = "report.html"


def trials_table(study) -> pd.DataFrame:
    """One row per trial, best validation important_f1 (one validation split) first: the weights as trained
    (scaled so the mean weight over training lines is 1: the scale that is exported and pasted), the
    scores, and the state. The dashboard's ``w_`` parameters are the weights as given, as ratios to Misc."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        a = t.user_attrs
        w = a.get("class_weights_trained") or a.get("class_weights") or {}
        rows.append({"number": t.number, "state": t.state.name, SCORE: a.get(SCORE),
                     "scheme": " = ".join(a.get("schemes") or [a.get("scheme", "")]),
                     **{f"{c} weight (as trained)": w.get(c) for c in CLASSES},
                     **{k: t.params[k] for k in ("window_size", "epochs", "learning_rate") if k in t.params},
                     "val_Nomenclature_f1": a.get("val_Nomenclature_f1"),
                     "val_Description_f1": a.get("val_Description_f1"),
                     "epochs_run": a.get("epochs_run"), "seconds": a.get("seconds"),
                     "note": a.get("fail_reason") or a.get("pruned_reason") or ("outside the search space"
                                                                               if a.get("outside_space") else "")})
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    return df.sort_values(SCORE, ascending=False, na_position="last", kind="stable")


def number(value) -> str:
    """A table cell: plain decimals (no 1e+04), blanks for missing values."""
    if value is None or (isinstance(value, float) and value != value):
        return ""
    if isinstance(value, float):
        return f"{value:.0f}" if abs(value) >= 1000 else f"{value:.4g}"
    return str(value)


def cell_format(column: str):
    """How a table column's cells print: scores and weights as :mod:`.formats` prints them in every view
    (``0.9600``, never ``0.96`` beside ``0.931``), seconds to a tenth, the rest as :func:`number`."""
    def blank_or(show):  # missing cells blank; text (a frame of strings already formatted) as it is
        return lambda v: number(v) if v is None or isinstance(v, str) or v != v else show(float(v))
    if column == SCORE or column.endswith("_f1"):
        return blank_or(fmt.score)
    if column.endswith("weight (as trained)"):
        return blank_or(fmt.weight)
    if column == "seconds":
        return blank_or(lambda v: f"{v:.1f}")
    return number


def formatters(df: pd.DataFrame) -> dict:
    """:func:`cell_format` of each column of ``df``."""
    return {c: cell_format(c) for c in df.columns}


def candidates_frame(rec: Recommendation) -> pd.DataFrame:
    """The confirmation's candidates: weights as trained, mean important_f1 over the units, the paired
    difference to no weights with its interval, printed as every view prints them (:mod:`.formats`)."""
    return pd.DataFrame([{"candidate": r.candidate, "trial": r.trial,
                          "weights N / D / M (as trained)": fmt.weights(r.class_weights),
                          "important_f1 (mean over units)": fmt.score(r.mean), fmt.VS_NONE: fmt.diff(r.diff.mean),
                          "interval": fmt.diff_interval(r.diff, rec.level)}
                         for r in rec.candidates])


def test_split_frame(test: dict, rec: Recommendation | None = None) -> pd.DataFrame:
    """Test scores (scored once, after the decision): the deployed model's first, then each single model's
    per class, each F1 with the test lines of that class it rests on."""
    rows = []
    deployed = deployed_test(rec, test) if rec else None
    def row(model: str, score: float, s: dict | None) -> dict:
        out = {"model": model, "important_f1": fmt.score(score)}
        for c in CLASSES if s else ():  # each F1 beside the number of test lines it rests on
            out.update({f"{c} F1": fmt.score(s[f"{c}_f1"]), f"{c} lines": str(int(s[f"{c}_support"]))})
        return out

    if deployed:
        rows.append(row(f"deployed: {deployed['model']}", deployed["important_f1"], deployed["stats"]))
    for name, label in TEST_ROWS.items():
        if name in test:
            rows.append(row(label, test[name]["stats"]["important_f1"], test[name]["stats"]))
    return pd.DataFrame(rows).fillna("")


SHORT_TEST_ROWS = {"recommended": "recommended, search model", "unweighted": "unweighted, search model",
                   "ensemble": "confirmation models"}


def terminal_trials(table: pd.DataFrame) -> pd.DataFrame:
    """The trials table cut to the terminal: number, state, score, scheme, the weights as trained in one column
    (as every view prints them), epochs and seconds; every column is in report.html and behind -v."""
    def scheme(name: str) -> str:
        return name if len(name) <= 24 else name[:23] + "…"

    weights = table[[f"{c} weight (as trained)" for c in CLASSES]].to_dict("records")
    return pd.DataFrame({"number": table["number"], "state": table["state"],
                         SCORE: table[SCORE].map(cell_format(SCORE)), "scheme": table["scheme"].map(scheme),
                         "weights N / D / M": [fmt.weights({c: w[f"{c} weight (as trained)"] for c in CLASSES})
                                               if all(v == v and v is not None for v in w.values()) else "-"
                                               for w in weights],
                         "epochs": table["epochs_run"].map(number), "seconds": table["seconds"].map(
                             cell_format("seconds"))})


def terminal_test(test: dict, rec: Recommendation | None) -> pd.DataFrame:
    """The test check cut to the terminal: each model's important_f1 and per-class F1 (the lines each F1 rests
    on, and the full names of the models, are in report.html and behind -v)."""
    frame, deployed = test_split_frame(test, rec), deployed_test(rec, test) if rec else None
    short = {label: SHORT_TEST_ROWS[name] for name, label in TEST_ROWS.items()}
    model = frame["model"].map(lambda m: short.get(m) or (f"deployed: {deployed['kind']}" if deployed and
                                                          m.startswith("deployed") else m))
    return pd.DataFrame({"model": model, **{c: frame[c] for c in ["important_f1", *(f"{k} F1" for k in CLASSES)]
                                            if c in frame}})


def report(storage_url: str, study_name: str, plots: bool = True, out_dir: str | Path | None = None,
           wide: bool = False) -> pd.DataFrame:
    """Print the trials table, the recommendation and the test check; write the HTML page (into
    ``out_dir``, by default the study's artifacts folder). The terminal tables fit 100 columns unless ``wide``
    (``-v``): then every column, as in the page."""
    study = tuned_study(storage_url, study_name)
    table = trials_table(study)
    rec = stored_recommendation(study)
    test = study.user_attrs.get("test_stats")
    if rec:  # the decision first; the evidence, then the trials, below it
        print(f"Recommendation: {decision_sentence(rec)}")
        print(f"\nconfirmation, paired {fmt.VS_NONE} over {rec.n_units} units "
              f"({units_phrase(rec)}):")
        print(candidates_table(rec))
    else:
        print("no recommendation yet: run `weight-tuner tune` to the end (it confirms the top candidates)")
    if rec:
        print(f"\nDeployed model (predict --study): {deployed_sentence(rec)}")
    if test and "recommended" in test:
        print("\ntest split (scored once, after the decision):")
        print((test_split_frame(test, rec) if wide else terminal_test(test, rec)).to_string(index=False))
    print(f"\ntrials, best validation {SCORE} first{'' if wide else ' (every column: -v, or report.html)'}:")
    if table.empty:
        print(f"study {study_name!r} has no trials")
    elif wide:
        print(table.to_string(index=False, formatters=formatters(table), na_rep=""))
    else:
        print(terminal_trials(table).to_string(index=False))
    if plots and not table.empty:
        path = Path(out_dir) if out_dir else artifacts_dir(storage_url, study_name)
        print(f"wrote {write_page(study, path / PAGE, table)}")
    return table


def paragraph(text: str) -> str:
    """A sentence as an HTML paragraph of a readable width, wrapped between words (a notebook wraps printed
    text anywhere, mid-word included)."""
    return f'<p style="max-width:1100px">{html.escape(text)}</p>'


def html_table(df: pd.DataFrame, name: str) -> str:
    """A table as HTML without the index column; a wide one scrolls inside its box instead of being cut
    (the report and the notebook both show tables this way)."""
    return TABLE_STYLE + '<div class="scroll">' + df.to_html(index=False, table_id=name, formatters=formatters(df),
                                               na_rep="", border=0, classes="data") + "</div>"


def page_html(study, table: pd.DataFrame | None = None) -> str:
    """The study as one HTML page (figures inline): decision, snippet, candidates, test, trials, figures."""
    from . import figures

    table = trials_table(study) if table is None else table
    rec = stored_recommendation(study)
    test = study.user_attrs.get("test_stats") or {}
    def e(text: str) -> str:
        return html.escape(text, quote=False)  # text content only: quotes stay readable (the paste snippet)

    parts = [f"<h1>Study {e(study.study_name)}</h1>"]
    if rec:
        parts += ['<h2>Recommendation</h2>', f'<p id="verdict">{e(decision_sentence(rec))}</p>',
                  "<p>Paste into SKOL:</p>", f'<pre id="paste">{e(paste_snippet(rec))}</pre>',
                  f"<p>Paired over {rec.n_units} units ({e(units_phrase(rec))}); "
                  f"{int(round(rec.level * 100))}% intervals: {e(rec.interval)}.</p>",
                  html_table(candidates_frame(rec), "candidates"),
                  "<h2>The deployed model (what <code>predict --study</code> uses)</h2>",
                  f'<p id="deployed">{e(deployed_sentence(rec))}</p>']
    else:
        parts.append('<p id="verdict">No recommendation yet: run <code>weight-tuner tune</code> to the end.</p>')
    if "recommended" in test:
        parts += ["<h2>Test split, per class (scored once, after the decision)</h2>",
                  html_table(test_split_frame(test, rec), "test"), f"<p>{e(SMALL_TEST_CAUTION)}</p>"]
    parts += ["<h2>Trials (validation), best first</h2>",
              "<p>Weights as trained (scaled so that the mean weight over the training lines is 1: the values "
              "<code>export</code> writes and you paste); <code>val_important_f1</code> is one validation split. "
              "The dashboard's <code>w_</code> parameters are the weights as given, as ratios to Misc.</p>",
              html_table(table, "trials"), "<h2>Figures</h2>"]
    parts += [f"<figure>{figures.img_tag(fig, name)}</figure>" for name, fig in figures.study_figures(study).items()]
    parts += ["<h2>Words used here</h2>", GLOSSARY]
    # Prose keeps a readable measure; tables and figures may use the whole window (a 1920 px screen shows the
    # trials table whole; a narrower one scrolls it in its box).
    style = ("body{font-family:sans-serif;margin:2em 3vw}p,pre,h1,h2,ul,dl{max-width:1100px}img{max-width:100%}"
             "pre{background:#f4f4f4;padding:.5em}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>weight-tuner: {e(study.study_name)}</title>"
            f"<style>{style}</style></head><body>{''.join(parts)}</body></html>")


def write_page(study, path: Path, table: pd.DataFrame | None = None) -> Path:
    """Write :func:`page_html` to ``path`` atomically; a folder that cannot be written is one line."""
    try:
        atomic_write_bytes(path, page_html(study, table).encode("utf-8"))
    except OSError as exc:
        raise WeightTunerError(f"cannot write {path}: {exc.strerror or exc}") from exc
    return path
