"""Measure the recommendation pipeline (tune + confirm) and write its section of docs/benchmarks.md.

Runs ``weight-tuner tune`` as a user would, one process per study, under ``/usr/bin/time -v``, then
reads each study's stored recommendation and test scores. Three parts, each skipped if its
studies already exist (so a long measurement can be resumed):

* ``skol``: the default pipeline on ../shared/skol-corpus, 30 trials, split seeds 0, 1, 2.
* ``power``: the sample corpus with Nomenclature 10x rarer and a short training budget, where
  weighting truly helps: does the pipeline find it? Split seeds 0, 1, 2.
* ``designs``: the confirm-only and the cross-validated design on the sample corpus, plain and
  rare, split seeds 0, 1, 2.

Usage (from the repository root): ``python benchmarks/measure_recommendation.py [skol] [power] [designs]``;
with no part named, all three. Results: benchmarks/recommendation.json and the section between the
``recommendation`` markers of docs/benchmarks.md.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "runs"
JSON_OUT = ROOT / "benchmarks" / "recommendation.json"
MD = ROOT / "docs" / "benchmarks.md"
START, END = "<!-- recommendation:start -->", "<!-- recommendation:end -->"
SEEDS = (0, 1, 2)
POWER_TOML = """schemes = ["unweighted", "inverse_frequency", "sqrt_inverse_frequency"]
[model]
hidden_size = 8
num_layers = 1
epochs = 3
batch_size = 16
window_size = 10
prediction_stride = 5
learning_rate = 0.01
input_projection = 0
"""


def tune(tag: str, storage: str, study: str, args: list[str]) -> dict:
    """Run one ``tune`` under ``/usr/bin/time -v``; return wall time, peak RSS and the phase times it printed."""
    out, err = RUNS / f"{tag}.out", RUNS / f"{tag}.err"
    if not out.exists() or "Next: weight-tuner export" not in out.read_text():
        cmd = ["/usr/bin/time", "-v", sys.executable, "-m", "weight_tuner.cli", "tune", "--study", study,
               "--storage", storage, *args]
        print(" ".join(cmd[3:]), file=sys.stderr, flush=True)
        with open(out, "w") as fo, open(err, "w") as fe:
            subprocess.run(cmd, cwd=ROOT, stdout=fo, stderr=fe, check=True)
    return parse_run(out.read_text(), err.read_text())


def parse_run(out: str, err: str) -> dict:
    """Phase times from tune's output; wall time and peak RSS from ``time -v``."""
    def grab(pattern, text, cast=float):
        m = re.search(pattern, text)
        return cast(m.group(1)) if m else None

    wall = grab(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", err, str)
    seconds = None
    if wall:
        parts = [float(p) for p in wall.split(":")]
        seconds = sum(p * 60 ** i for i, p in enumerate(reversed(parts)))
    return {"search_seconds": grab(r"finished trials \((\d+)s\)", out),
            "confirm_seconds": grab(r"confirmation \((\d+)s\)", out),
            "wall_seconds": seconds, "peak_rss_mib": (grab(r"Maximum resident set size \(kbytes\): (\d+)", err) or 0) / 1024}


def study_result(storage: str, study: str) -> dict:
    """The stored recommendation and test scores of a finished study."""
    import optuna

    s = optuna.load_study(study_name=study, storage=storage)
    rec, test = s.user_attrs["recommendation"], s.user_attrs["test_stats"]
    states = [t.state.name for t in s.trials]
    return {"decision": rec["decision"], "candidate": rec["candidate"], "class_weights": rec["class_weights"],
            "diff": rec["diff_vs_unweighted"], "n_units": rec["n_units"],
            "candidates": [{"candidate": r["candidate"], "important_f1": r["mean"], "diff": r["diff"]["mean"],
                            "ci_low": r["diff"]["ci_low"], "ci_high": r["diff"]["ci_high"]} for r in rec["candidates"]],
            "test_recommended": test["recommended"]["stats"]["important_f1"],
            "test_unweighted": test["unweighted"]["stats"]["important_f1"],
            "trials": {"complete": states.count("COMPLETE"), "pruned": states.count("PRUNED")}}


def part_skol(results: dict) -> None:
    storage = "sqlite:///studies/skol-rec.db"
    for seed in SEEDS:
        name = f"skol-rec-s{seed}"
        run = tune(name, storage, name, ["--data", "../shared/skol-corpus", "--trials", "30", "--split-seed", str(seed)])
        results.setdefault("skol", {})[str(seed)] = {**run, **study_result(storage, name)}


def part_power(results: dict) -> None:
    toml = RUNS / "power.toml"
    toml.write_text(POWER_TOML + '[pruner]\ntype = "none"\n')
    storage = "sqlite:///studies/power-rec.db"
    for seed in SEEDS:
        name = f"power-s{seed}"
        run = tune(name, storage, name, ["--sample-docs", "60", "--sample-rare-nomenclature", "10", "--config",
                                         str(toml), "--trials", "3", "--confirm-top", "2", "--split-seed", str(seed)])
        results.setdefault("power", {})[str(seed)] = {**run, **study_result(storage, name)}


def part_designs(results: dict) -> None:
    toml = RUNS / "designs.toml"
    toml.write_text(POWER_TOML.replace('schemes = ["unweighted", "inverse_frequency", "sqrt_inverse_frequency"]',
                                       'schemes = ["unweighted", "inverse_frequency"]'))
    storage = "sqlite:///studies/designs.db"
    for corpus, extra in (("plain", []), ("rare", ["--sample-rare-nomenclature", "10"])):
        for design in ("confirm", "cv"):
            for seed in SEEDS:
                name = f"designs-{corpus}-{design}-s{seed}"
                run = tune(name, storage, name, ["--sample-docs", "60", *extra, "--config", str(toml), "--trials", "8",
                                                 "--design", design, "--split-seed", str(seed)])
                results.setdefault("designs", {})[name] = {"corpus": corpus, "design": design, "seed": seed,
                                                           **run, **study_result(storage, name)}


def _w(w):
    return " / ".join(f"{w[c]:.3g}" for c in ("Nomenclature", "Description", "Misc")) if w else "none"


def render(results: dict) -> str:
    """The benchmark section, from the measured results."""
    lines = [START, ""]
    if "skol" in results:
        lines += ["### Tune + confirm on ../shared/skol-corpus, three split seeds", "",
                  "Command, per split seed S: `/usr/bin/time -v weight-tuner tune --data ../shared/skol-corpus "
                  "--study skol-rec-sS --storage sqlite:///studies/skol-rec.db --trials 30 --split-seed S` "
                  "(default `tune` model and space, 3 folds x 2 repeats, top 3). Test important_f1 of the "
                  "recommendation and of the unweighted model, each scored once after the decision:", "",
                  "| split seed | decision | best diff vs none [95% interval] | test: recommended | test: unweighted "
                  "| search | confirmation | whole command | peak RSS |", "|---|---|---|---|---|---|---|---|---|"]
        for seed, r in sorted(results["skol"].items()):
            best = max(r["candidates"][1:], key=lambda c: c["diff"])
            lines.append(f"| {seed} | {r['decision']} ({_w(r['class_weights'])}) | {best['candidate']}: "
                         f"{best['diff']:+.4f} [{best['ci_low']:+.4f}, "
                         f"{best['ci_high']:+.4f}] | {r['test_recommended']:.4f} | {r['test_unweighted']:.4f} | "
                         f"{r['search_seconds']:.0f} s | {r['confirm_seconds']:.0f} s | {r['wall_seconds']:.0f} s | "
                         f"{r['peak_rss_mib']:,.0f} MiB |")
        runs = list(results["skol"].values())
        rec = sum(r["test_recommended"] for r in runs) / len(runs)
        unw = sum(r["test_unweighted"] for r in runs) / len(runs)
        ratio = [(r["search_seconds"] + r["confirm_seconds"]) / r["search_seconds"] for r in runs]
        # A unit run trains one model, as a trial does: 30 trials + (candidates - 1) x units.
        per_hour = [(30 + (len(r["candidates"]) - 1) * r["n_units"]) / (r["wall_seconds"] / 3600) for r in runs]
        lines += ["", f"Mean test important_f1 over the split seeds: recommendation {rec:.4f}, unweighted {unw:.4f} "
                  f"(difference {rec - unw:+.4f}). Search plus confirmation took {min(ratio):.2f}x to "
                  f"{max(ratio):.2f}x the search alone, in the same process; the search alone is today's "
                  f"30-trial study. Trial-equivalents per hour (30 trials plus one per confirmation unit run, "
                  f"over the whole command's wall time): {min(per_hour):.0f} to {max(per_hour):.0f}.", ""]
        for seed, r in sorted(results["skol"].items()):
            lines.append(f"Split seed {seed} candidates (mean important_f1 over the units; difference to no weights "
                         "[95% interval]): " + "; ".join(
                             f"{c['candidate']} {c['important_f1']:.4f} ({c['diff']:+.4f} [{c['ci_low']:+.4f}, "
                             f"{c['ci_high']:+.4f}])" for c in r["candidates"]) + ".")
        lines.append("")
    if "power" in results:
        lines += ["### Power: a setting where weighting truly helps", "",
                  "Command, per split seed S: `weight-tuner tune --sample-docs 60 --sample-rare-nomenclature 10 "
                  "--config runs/power.toml --trials 3 --confirm-top 2 --split-seed S` (Nomenclature 10x rarer, "
                  "a BiLSTM of 8 units trained 3 epochs: an unweighted model learns to ignore the rare class; "
                  "the config is in benchmarks/measure_recommendation.py).", "",
                  "| split seed | decision | diff vs none [95% interval] | test: recommended | test: unweighted | "
                  "whole command |", "|---|---|---|---|---|---|"]
        for seed, r in sorted(results["power"].items()):
            d = r["diff"]
            lines.append(f"| {seed} | {r['decision']} ({_w(r['class_weights'])}) | {d['mean']:+.4f} "
                         f"[{d['ci_low']:+.4f}, {d['ci_high']:+.4f}] | {r['test_recommended']:.4f} | "
                         f"{r['test_unweighted']:.4f} | {r['wall_seconds']:.0f} s |")
        lines.append("")
    if "designs" in results:
        lines += ["### The two designs: confirm-only against cross-validated search", "",
                  "Command: `weight-tuner tune --sample-docs 60 [--sample-rare-nomenclature 10] --config "
                  "runs/designs.toml --trials 8 --design confirm|cv --split-seed S` (the power setting's model, "
                  "schemes unweighted and inverse_frequency, then 6 TPE trials).", "",
                  "| corpus | design | split seed | decision | test: recommended | test: unweighted | complete / "
                  "pruned | search | confirmation |", "|---|---|---|---|---|---|---|---|---|"]
        for r in results["designs"].values():
            lines.append(f"| {r['corpus']} | {r['design']} | {r['seed']} | {r['decision']} | "
                         f"{r['test_recommended']:.4f} | {r['test_unweighted']:.4f} | {r['trials']['complete']} / "
                         f"{r['trials']['pruned']} | {r['search_seconds']:.0f} s | {r['confirm_seconds']:.0f} s |")
        lines.append("")
    lines.append(END)
    return "\n".join(lines)


def main(parts: list[str]) -> None:
    RUNS.mkdir(exist_ok=True)
    results = json.loads(JSON_OUT.read_text()) if JSON_OUT.exists() else {}
    for part in parts or ["skol", "power", "designs"]:
        {"skol": part_skol, "power": part_power, "designs": part_designs}[part](results)
        JSON_OUT.write_text(json.dumps(results, indent=2) + "\n")
    section = render(results)
    old = MD.read_text()
    if START in old and END in old:
        new = old[: old.index(START)] + section + old[old.index(END) + len(END):]
    else:
        new = old.rstrip("\n") + "\n\n## The recommendation (tune + confirm)\n\n" + section + "\n"
    MD.write_text(new)
    print(f"wrote {JSON_OUT} and {MD}", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1:])
