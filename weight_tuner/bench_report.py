"""Benchmark results as Markdown: the sections of ``docs/benchmarks.md`` that ``weight-tuner bench`` rewrites.

Each section sits between two HTML comment marks, so rewriting one never touches the prose around it.
"""

from __future__ import annotations

import json
from pathlib import Path

from .config import CLASSES
from .bench import HELD_OUT_VOLUME
from .paths import atomic_write_bytes, write_json

MARK_START = "<!-- bench:start -->"

MARK_END = "<!-- bench:end -->"

TRANSFER_START = "<!-- transfer:start -->"

TRANSFER_END = "<!-- transfer:end -->"


def render_transfer(result: dict, command: str) -> str:
    """The transfer section: each held-out group beside the chunk split, as Markdown."""
    lines = [TRANSFER_START, "", f"Command: `{command}`", "",
             f"Split by {result['by']}: train on the other {result['by']}(s), validate inside them, test on the "
             f"held-out one; seeds {result['seeds']}; mean ± std over seeds of test important_f1 "
             "(Nomenclature F1 / Description F1 means in brackets)."
             + (f" The held-out volume row tests, for each seed, on one volume drawn with that seed "
                f"({', '.join(result['settings'][HELD_OUT_VOLUME]['split_by']['test_groups'])}), trained on the "
                "other volumes of every journal (mean lines per seed)." if HELD_OUT_VOLUME in result["settings"]
                else ""), "",
             "| split | train / val / test lines | " + " | ".join(next(iter(result["settings"].values()))["rows"])
             + " |", "| --- | --- |" + " --- |" * len(next(iter(result["settings"].values()))["rows"])]
    for name, setting in result["settings"].items():
        n = setting["lines"]
        cells = [f"{r['important_f1']['mean']:.4f} ± {r['important_f1']['std']:.4f} "
                 f"({r['Nomenclature_f1']['mean']:.3f} / {r['Description_f1']['mean']:.3f})"
                 for r in setting["rows"].values()]
        lines.append(f"| {name} | {n['train']} / {n['val']} / {n['test']} | {' | '.join(cells)} |")
    if result["mean_of_directions"]:
        lines += ["", "Mean over the held-out directions: " + ", ".join(
            f"{row} {v:.4f}" for row, v in result["mean_of_directions"].items()) + "."]
    return "\n".join(lines + ["", TRANSFER_END])


def replace_section(md_path: str | Path, section: str, start: str, end: str) -> None:
    """Replace the marked section of ``md_path`` (appending it, or creating the file, if absent)."""
    md_path = Path(md_path)
    old = md_path.read_text() if md_path.exists() else "# Benchmarks\n"
    if start in old and end in old:
        new = old[: old.index(start)] + section + old[old.index(end) + len(end):]
    else:
        new = old.rstrip("\n") + "\n\n" + section + "\n"
    atomic_write_bytes(md_path, new.encode())


def render_markdown(result: dict, command: str) -> str:
    """The benchmark table and notes as Markdown."""
    seeds = result["seeds"]
    lines = [MARK_START, "", f"Command: `{command}`", "",
             f"Model config: `{json.dumps({k: v for k, v in result['config'].items() if k != 'class_weights'})}`; "
             f"seeds {seeds}; test split of {result['data']['source']} "
             f"(data fingerprint `{result['data']['data_fingerprint']}`). Mean ± std over seeds.", "",
             "| row | weights (N / D / M) | Nomenclature F1 | Description F1 | important_f1 | seconds |",
             "| --- | --- | --- | --- | --- | --- |"]
    ordered = sorted(result["rows"].items(), key=lambda kv: -kv[1]["important_f1"]["mean"])
    for name, row in ordered:
        w = row["weights"]
        ws = " / ".join(f"{w[c]:.3g}" for c in CLASSES) if w else "-"
        cells = [f"{row[k]['mean']:.4f} ± {row[k]['std']:.4f}" for k in ("Nomenclature_f1", "Description_f1",
                                                                          "important_f1")]
        lines.append(f"| {name} | {ws} | {' | '.join(cells)} | {row['seconds']['mean']:.0f} |")
    lines.append("")
    lines += verdict_lines(result)
    sp = result.get("speed") or {}
    if sp:
        val = sp["validation_seconds"]
        lines += ["", f"Speed (seed {seeds[0]}, unweighted; fastest of {len(sp['runs']['trial'])} interleaved runs "
                  f"each): one trial run by `tune` (SQLite storage, a report and pruning check after every epoch, "
                  f"metrics stored, model saved) took {sp['trial_seconds']:.1f}s; a bare `model.fit` of the same "
                  f"model on the same arrays, building and tracing included, {sp['bare_fit_seconds']:.1f}s: "
                  f"per-trial overhead {sp['overhead_fraction']:.1%}. Against `model.fit` of the trials' reused, "
                  f"re-initialised model ({sp['reused_fit_seconds']:.1f}s) a trial's extra work is "
                  f"{sp['beyond_fit_fraction']:.1%}, mostly validation scoring: {val[0]:.2f}s after the first "
                  f"epoch (including tracing), then {', '.join(f'{v:.2f}' for v in val[1:])}s. "
                  f"{sp['mean_epoch_train_seconds']:.1f}s per training epoch, "
                  f"{sp['lines_per_second']:.0f} training lines/s."]
    sc = result.get("screen") or {}
    if sc:
        text = f"Post-hoc screen: {sc['vectors_per_second']:.0f} weight vectors/s on {sc['lines']} validation lines."
        if "spearman" in sc:
            text += (f" Spearman between the screen's score and the trained validation important_f1 over "
                     f"{sc['trials']} study trials: {sc['spearman']:.3f} (p = {sc['p_value']:.3g}).")
        lines += ["", text]
    if result.get("scaling"):
        lines += ["", "Trial wall time against sample-corpus size (a new model each, so each pays for building "
                  "and tracing; then the mean time of epochs 2+ with their validation): " + ", ".join(
                      f"{s['factor']}x ({s['train_lines']} train lines) {s['trial_seconds']:.1f}s, "
                      f"{s['later_epoch_seconds']:.2f}s/epoch" for s in result["scaling"]) + "."]
    lines += ["", f"Peak RSS of the benchmark process: {result['peak_rss_mb']:.0f} MB.", "", MARK_END]
    return "\n".join(lines)


def verdict_lines(result: dict) -> list[str]:
    """Plain statements: does the tuned row beat every fixed scheme and threshold tuning by > 1 std?"""
    tuned = [k for k in result["rows"] if k.startswith("tuned")]
    if not tuned:
        return ["No tuned row (run with `--study`): nothing to compare."]
    t = result["rows"][tuned[0]]["important_f1"]
    losers, ties = [], []
    for name, row in result["rows"].items():
        if name == tuned[0]:
            continue
        other = row["important_f1"]
        margin = max(t["std"], other["std"])
        if t["mean"] - other["mean"] > margin:
            continue
        (losers if other["mean"] >= t["mean"] else ties).append(name)
    if not losers and not ties:
        return [f"**Finding:** the tuned weights beat every other row by more than one standard deviation "
                f"(important_f1 {t['mean']:.4f})."]
    out = []
    if losers:
        out.append(f"**Finding:** the tuned weights do *not* beat {', '.join(losers)} on mean test important_f1.")
    if ties:
        out.append(f"**Finding:** the tuned weights are ahead of {', '.join(ties)} by less than one standard "
                   "deviation: not a clear win.")
    return out


def write_outputs(result: dict, md_path: str | Path, json_path: str | Path, command: str) -> None:
    """Replace the benchmark section of ``md_path`` (creating it if needed) and write the raw JSON."""
    replace_section(md_path, render_markdown(result, command), MARK_START, MARK_END)
    write_json(json_path, result)
