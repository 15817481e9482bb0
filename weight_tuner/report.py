"""Report stage: the trials table (pandas), best first, and one self-contained HTML page of the study.

The page holds the decision and what to paste, the candidates with their intervals, per-class
test scores, the trials table and the figures of :mod:`.figures` (inline PNG), so it opens
anywhere, offline, as one file.
"""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd

from .config import CLASSES
from .errors import WeightTunerError
from .paths import artifacts_dir, atomic_write_bytes
from .study.notes import candidates_table, decision_sentence, paste_snippet
from .study.space import METRIC_NAME
from .study.storage import stored_recommendation, tuned_study

SCORE = METRIC_NAME  # the trials table's score column
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


def candidates_frame(rec: dict) -> pd.DataFrame:
    """The confirmation's candidates with their paired difference to no weights and its interval."""
    return pd.DataFrame([{"candidate": r["candidate"], "kind": r["kind"], "trial": r.get("trial"),
                          **{f"{c} weight (as trained)": (r.get("class_weights") or {}).get(c) for c in CLASSES},
                          "important_f1 (mean over units)": r["mean"], "diff vs no weights": r["diff"]["mean"],
                          "ci_low": r["diff"]["ci_low"], "ci_high": r["diff"]["ci_high"]}
                         for r in rec["candidates"]])


def test_split_frame(test: dict) -> pd.DataFrame:
    """Per-class test scores of the recommended and the unweighted model (scored once, after the decision)."""
    keys = ["important_f1"] + [f"{c}_{m}" for c in CLASSES for m in ("precision", "recall", "f1")]
    return pd.DataFrame([{"model": name, **{k: test[name]["stats"][k] for k in keys}}
                         for name in ("recommended", "unweighted") if name in test])


def report(storage_url: str, study_name: str, plots: bool = True, out_dir: str | Path | None = None) -> pd.DataFrame:
    """Print the trials table, the recommendation and the test check; write the HTML page (into
    ``out_dir``, by default the study's artifacts folder)."""
    study = tuned_study(storage_url, study_name)
    table = trials_table(study)
    print(table.to_string(index=False, formatters={c: number for c in table.columns})
          if not table.empty else f"study {study_name!r} has no trials")
    rec = stored_recommendation(study)
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
        path = Path(out_dir) if out_dir else artifacts_dir(storage_url, study_name)
        print(f"wrote {write_page(study, path / PAGE, table)}")
    return table


def _table(df: pd.DataFrame, name: str) -> str:
    # A wide table scrolls inside its box instead of widening the page.
    return '<div class="scroll">' + df.to_html(index=False, table_id=name, formatters={c: number for c in df.columns},
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
                  f"<p>Paired over {rec['n_units']} units ({rec['folds']} folds x {rec['repeats']} repeats); "
                  f"{int(round(rec['level'] * 100))}% intervals: {e(rec['interval'])}.</p>",
                  _table(candidates_frame(rec), "candidates")]
    else:
        parts.append('<p id="verdict">No recommendation yet: run <code>weight-tuner tune</code> to the end.</p>')
    if "recommended" in test:
        parts += ["<h2>Test split, per class (scored once, after the decision)</h2>", _table(test_split_frame(test), "test")]
    parts += ["<h2>Trials (validation), best first</h2>",
              "<p>Weights as trained (scaled so that the mean weight over the training lines is 1: the values "
              "<code>export</code> writes and you paste); <code>val_important_f1</code> is one validation split. "
              "The dashboard's <code>w_</code> parameters are the weights as given, as ratios to Misc.</p>",
              _table(table, "trials"), "<h2>Figures</h2>"]
    parts += [f"<figure>{figures.img_tag(fig, name)}</figure>" for name, fig in figures.study_figures(study).items()]
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto}table.data{border-collapse:collapse;"
             "font-size:13px}table.data td,table.data th{padding:2px 8px;border-bottom:1px solid #ddd}"
             "img{max-width:100%}pre{background:#f4f4f4;padding:.5em}div.scroll{overflow-x:auto;max-width:100%}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>weight-tuner: {e(study.study_name)}</title>"
            f"<style>{style}</style></head><body>{''.join(parts)}</body></html>")


def write_page(study, path: Path, table: pd.DataFrame | None = None) -> Path:
    """Write :func:`page_html` to ``path`` atomically; a folder that cannot be written is one line."""
    try:
        atomic_write_bytes(path, page_html(study, table).encode("utf-8"))
    except OSError as exc:
        raise WeightTunerError(f"cannot write {path}: {exc.strerror or exc}") from exc
    return path
