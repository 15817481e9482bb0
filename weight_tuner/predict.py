"""Predict stage: label new text with a saved model, write YEDDA and per-line probabilities.

Also the guide's optional sequence-rule pass, which uses the Nomenclature →
Description pattern of taxonomic papers.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import corpus
from .config import CLASSES
from .errors import DataError
from .metrics import compute_stats
from .paths import atomic_write_bytes
from .train import SplitData
from .bundles import load_bundle, load_label_map
from .windows import offsets_from_sizes

logger = logging.getLogger(__name__)

NOM, DESC, MISC = (CLASSES.index(c) for c in ("Nomenclature", "Description", "Misc"))


def apply_sequence_rules(probs: np.ndarray, threshold: float = 0.3) -> np.ndarray:
    """Predicted classes after the Nomenclature → Description rules.

    1. A line right after a Nomenclature line or a Description line, whose own
       Description probability is at least ``threshold``, is Description (a
       description follows its name and continues until it clearly stops).
    2. A single Misc line between two Description lines, with Description
       probability at least ``threshold``, is Description.
    With ``threshold`` > 1 nothing changes. Rules run in reading order.
    """
    pred = probs.argmax(axis=1).copy()
    for i in range(1, len(pred)):
        if pred[i] == MISC and pred[i - 1] in (NOM, DESC) and probs[i, DESC] >= threshold:
            pred[i] = DESC
    for i in range(1, len(pred) - 1):
        if pred[i] == MISC and pred[i - 1] == DESC and pred[i + 1] == DESC and probs[i, DESC] >= threshold:
            pred[i] = DESC
    return pred


def tune_sequence_threshold(probs: np.ndarray, y: np.ndarray, grid=None) -> tuple[float, float]:
    """The rule threshold that maximises important_f1 on (validation) data; ``(threshold, score)``.

    A threshold above 1 (rules off) is always a candidate, so the rules are used only when they help.
    """
    grid = grid if grid is not None else [1.01, 0.5, 0.4, 0.3, 0.2, 0.1]
    best = (1.01, -1.0)
    for t in grid:
        score = compute_stats(y, one_hot_probs(apply_sequence_rules(probs, t)))["important_f1"]
        if score > best[1] + 1e-12:
            best = (t, score)
    return best


def one_hot_probs(pred: np.ndarray) -> np.ndarray:
    """Hard predictions as probability rows, for scoring with :func:`compute_stats`."""
    out = np.zeros((len(pred), len(CLASSES)), dtype=np.float32)
    out[np.arange(len(pred)), pred] = 1.0
    return out


@dataclass
class FileLines:
    """The lines of one input file that get a prediction, with true labels when it is annotated."""

    path: Path
    texts: list[str]
    line_nos: list[int]
    y: np.ndarray | None
    offsets: np.ndarray
    source: list[str]  # every line of the file as read (an .ann file's without its markup), to write back


def read_input(path: Path, max_chunk_lines: int = 2000, label_map=corpus.default_label_map) -> FileLines:
    """An ``.ann`` file gives its labelled lines (and labels, through ``label_map``); other files give
    every non-blank line."""
    if not path.is_file():
        raise DataError(f"input file {path} " + ("is not a regular file" if path.exists() else "does not exist"))
    report = corpus.ReadReport()
    # Messages name the path as given (or found below a folder given): archives repeat file names.
    text = corpus.decode_bytes(path.read_bytes(), str(path), report)
    if path.suffix == ".ann":
        doc = corpus.parse_yedda(text, str(path), report)
        chunks = corpus.chunk_documents([doc], max_chunk_lines)
        lines = [ln for ch in chunks for ln in ch.lines]
        y = np.array([CLASSES.index(label_map(ln.label)) for ln in lines], dtype=np.int64)
        sizes = [len(ch.lines) for ch in chunks]
        out = FileLines(path, [ln.text for ln in lines], [ln.line_no for ln in lines], y,
                        offsets_from_sizes(sizes), doc.text.split("\n"))
    else:
        source = text.split("\n")
        pairs = [(i + 1, t.strip(" \t\r\f\v")) for i, t in enumerate(source) if t.strip(" \t\r\f\v")]
        out = FileLines(path, [t for _, t in pairs], [n for n, _ in pairs], None,
                        offsets_from_sizes([len(pairs)]), source)
    for w in report.warnings:
        logger.warning(w)
    return out


def to_yedda(source: list[str], line_nos: list[int], pred: np.ndarray) -> str:
    """The input written back line for line with only the labels added: the lines numbered ``line_nos`` (from 1)
    get ``pred``, and a run of neighbouring lines of one class becomes one YEDDA block; every other line
    (blank, or outside the blocks of an ``.ann`` file) is written as it was. Without the markup it is
    ``source`` again."""
    label = dict(zip(line_nos, (int(p) for p in pred)))
    out = []
    for k, line in enumerate(source, start=1):
        cls = label.get(k)
        if cls is None:
            out.append(line)
            continue
        body, eol = (line[:-1], "\r") if line.endswith("\r") else (line, "")  # the markup goes before a CR
        opens, closes = label.get(k - 1) != cls, label.get(k + 1) != cls
        out.append(("[@" if opens else "") + body + (f"#{CLASSES[cls]}*]" if closes else "") + eol)
    return "\n".join(out)


def label_counts(pred: np.ndarray) -> dict[str, int]:
    """Lines per predicted class."""
    return {c: int(np.sum(pred == i)) for i, c in enumerate(CLASSES)}


PRED_SUFFIX = ".pred.txt.ann"
INPUT_SUFFIXES = (".ann", ".txt")


def collect_inputs(paths: list[str | Path]) -> list[Path]:
    """The files to label: each file as given, and every ``.ann``/``.txt`` file below each folder given,
    in sorted order (earlier predictions, ``*.pred.txt.ann``, are skipped there). A file reached twice
    counts once. A missing path, or a folder with nothing to label, is a :class:`DataError`."""
    found: list[Path] = []
    for given in map(Path, paths):
        if given.is_dir():
            below = sorted(p for p in given.rglob("*") if p.is_file() and p.suffix in INPUT_SUFFIXES
                           and not p.name.endswith(PRED_SUFFIX))
            if not below:
                raise DataError(f"predict: folder {given} holds no .ann or .txt file")
            found += below
        elif given.is_file():
            found.append(given)
        else:
            raise DataError(f"predict: input {given} does not exist")
    seen, unique = set(), []
    for path in found:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(path)
    return unique


def output_path(path: Path, target_dir: Path) -> Path:
    """``target_dir/<name>.pred.txt.ann`` for input ``path`` (``.ann`` and ``.txt`` suffixes dropped)."""
    return target_dir / (path.name.removesuffix(".ann").removesuffix(".txt") + PRED_SUFFIX)


def output_paths(inputs: list[Path], out_dir: str | Path | None) -> dict[Path, Path]:
    """Where each input's prediction goes: beside it, or under ``out_dir`` at its path relative to the
    inputs' deepest common folder (so ``a/s1.txt.ann`` and ``b/s1.txt.ann`` keep apart).

    Two inputs that would still share an output (``x.txt`` beside ``x.txt.ann``) are a
    :class:`DataError` naming both, raised before anything is written.
    """
    if out_dir is None:
        targets = {p: output_path(p, p.parent) for p in inputs}
    else:
        parents = [p.resolve().parent for p in inputs]
        root = Path(os.path.commonpath(parents)) if parents else Path(".")
        targets = {p: output_path(p, Path(out_dir) / parent.relative_to(root)) for p, parent in zip(inputs, parents)}
    owner: dict[Path, Path] = {}
    for path, target in targets.items():
        key = target.resolve()
        if key in owner:
            raise DataError(f"predict: {owner[key]} and {path} would both write {target}; "
                            "rename one or predict them separately")
        owner[key] = path
    return targets


def group_inputs(inputs: list[Path], adapt: str | None) -> list[list[Path]]:
    """The inputs in the groups whose class balance is estimated together: one folder's files for
    ``adapt="folder"``, else one file each."""
    if adapt != "folder":
        return [[p] for p in inputs]
    groups: dict[Path, list[Path]] = {}
    for p in inputs:
        groups.setdefault(p.parent, []).append(p)
    return list(groups.values())


def _probs_csv(fl: FileLines, probs: np.ndarray, pred: np.ndarray) -> bytes:
    """One file's per-line probabilities, prediction, true label (where known) and text, as CSV."""
    buf = io.StringIO(newline="")
    w = csv.writer(buf)
    w.writerow(["line", *[f"p_{c}" for c in CLASSES], "predicted", "true", "text"])
    for i, text in enumerate(fl.texts):
        w.writerow([fl.line_nos[i], *[f"{p:.6f}" for p in probs[i]], CLASSES[pred[i]],
                    CLASSES[fl.y[i]] if fl.y is not None else "", text])
    return buf.getvalue().encode("utf-8")


def _mean_probs(loaded: list, fl: FileLines, calibration) -> np.ndarray:
    """The models' per-line probabilities on one file, each calibrated, averaged."""
    from .posthoc import calibrated_mean

    featurizer = loaded[0][1]
    # each chunk a document, as in training (a file's chunks: the whole file, unless it is very long)
    rows = featurizer.transform_rows(fl.texts, np.diff(fl.offsets).tolist(), fl.line_nos)
    split = SplitData.whole(str(fl.path), rows, fl.y if fl.y is not None else
                            np.zeros(len(fl.texts), dtype=np.int64), fl.offsets, [str(fl.path)])
    return calibrated_mean(((model, config) for model, _, config in loaded), split, calibration)


def _adapted(items: list, train_prior: dict[str, float], where: Path) -> tuple[list, dict[str, float]]:
    """A group's probabilities re-weighted to its class balance, estimated without labels from
    ``train_prior`` (:func:`.posthoc.adapt_priors`), and that estimate."""
    from .posthoc import adapt_priors

    prior = np.array([train_prior[c] for c in CLASSES], dtype=np.float64)
    adjusted, estimate = adapt_priors(np.concatenate([p for _, _, p in items]), prior)
    cuts = np.cumsum([len(p) for _, _, p in items])[:-1]
    estimated = {c: round(float(v), 4) for c, v in zip(CLASSES, estimate)}
    logger.info(f"estimated class balance of {where}: " + ", ".join(f"{c} {v:.3f}" for c, v in estimated.items()))
    return [(path, fl, p.astype(np.float32)) for (path, fl, _), p in zip(items, np.split(adjusted, cuts))], estimated


def _labelled(fl: FileLines, probs: np.ndarray, out_path: Path, multipliers, sequence_threshold,
              probs_csv) -> tuple[dict, np.ndarray]:
    """Label one file from its probabilities and write its outputs (atomically); return its entry and the
    probabilities its labels are scored by (one-hot where sequence rules chose the labels)."""
    from .posthoc import apply_multipliers

    probs = apply_multipliers(probs, multipliers)
    pred = apply_sequence_rules(probs, sequence_threshold) if sequence_threshold is not None else probs.argmax(axis=1)
    atomic_write_bytes(out_path, to_yedda(fl.source, fl.line_nos, pred).encode("utf-8"))
    entry = {"output": str(out_path), "lines": len(fl.texts), "labels": label_counts(pred)}
    if probs_csv:
        csv_path = out_path.with_name(out_path.name.removesuffix(".txt.ann") + ".probs.csv")
        atomic_write_bytes(csv_path, _probs_csv(fl, probs, pred))
        entry["probs_csv"] = str(csv_path)
    scored = one_hot_probs(pred) if sequence_threshold is not None else probs
    if fl.y is not None:
        entry["stats"] = compute_stats(fl.y, scored)
    return entry, scored


def _read_group(group: list[Path], loaded: list, label_map, calibration, results: dict, bar) -> list[tuple]:
    """``(path, file, mean probabilities)`` for each file of ``group`` with lines; one without is recorded as
    skipped in ``results``."""
    items = []
    for path in group:
        fl = read_input(path, label_map=label_map)
        bar.update(1)
        if not fl.texts:
            logger.warning(f"{fl.path}: no lines to label")
            results["files"][str(fl.path)] = {"output": None, "lines": 0, "skipped": "no lines to label"}
            continue
        items.append((path, fl, _mean_probs(loaded, fl, calibration)))
    return items


def _throughput(results: dict, total_lines: int, seconds: float) -> dict:
    """Files, lines and lines per second of a run (logged too)."""
    labelled = [e for e in results["files"].values() if not e.get("skipped")]
    files = f"{len(labelled)} file{'s' if len(labelled) != 1 else ''}"
    logger.info(f"predicted {total_lines} lines in {files} in {seconds:.1f}s "
                f"({total_lines / max(seconds, 1e-9):.0f} lines/s)")
    return {"files": len(labelled), "lines": total_lines, "seconds": round(seconds, 3),
            "lines_per_second": round(total_lines / seconds, 1) if seconds > 0 else None}


def predict_files(model_path: str | Path | list[Path], files: list[str | Path], *, out_dir: str | Path | None = None,
                  probs_csv: bool = False, sequence_threshold: float | None = None,
                  multipliers: dict[str, float] | None = None, progress: bool = False,
                  adapt: str | None = None, train_prior: dict[str, float] | None = None,
                  calibration=None, targets: dict[Path, Path] | None = None) -> dict:
    """Label ``files`` (files or folders, see :func:`collect_inputs`) with a saved model bundle, or with
    several (a list of bundle paths: an ensemble, whose per-line probabilities are averaged, each model's
    calibrated first with ``calibration``, a :class:`.posthoc.Calibration`); return per-file and overall
    stats for annotated files.

    Outputs go where :func:`output_paths` says (``targets``: that mapping, where the caller already made
    it); every output is written atomically, so an interrupted run leaves earlier outputs whole and no
    half-written file. Rows are featurised one file at a time.
    With ``adapt`` (``"file"`` or ``"folder"``) the probabilities are re-weighted to the class balance of
    each file or folder, estimated without labels (:func:`.posthoc.adapt_priors`) from ``train_prior``,
    the class fractions the models were trained on; the estimate is reported per file.
    ``multipliers`` (a study's ``thresholds`` recommendation) predict ``argmax_c m_c p_c`` instead of
    argmax, after averaging and adaptation. Labels of ``.ann`` files are mapped to classes as the model's
    training data was (its ``--label-map``). With ``progress`` a bar over files is drawn on stderr.
    """
    from tqdm import tqdm

    from .posthoc import ADAPT_CHOICES

    if adapt is not None and adapt not in ADAPT_CHOICES:
        raise DataError(f"predict: --adapt-priors must be one of {', '.join(ADAPT_CHOICES)}, got {adapt!r}")
    if adapt is not None and train_prior is None:
        raise DataError("predict: --adapt-priors needs the class balance the model was trained on (use --study)")
    targets = targets if targets is not None else output_paths(collect_inputs(files), out_dir)
    bundles = list(model_path) if isinstance(model_path, (list, tuple)) else [model_path]
    loaded = [load_bundle(p) for p in bundles]  # each member once per call
    label_map = load_label_map(bundles[0])
    results: dict = {"files": {}, "models": len(loaded), "labels": dict.fromkeys(CLASSES, 0)}
    scored: list[tuple[np.ndarray, np.ndarray]] = []
    t0, total_lines = time.perf_counter(), 0
    bar = tqdm(total=len(targets), desc="predict", unit="file", file=sys.stderr, disable=not progress)
    for group in group_inputs(list(targets), adapt):
        items = _read_group(group, loaded, label_map, calibration, results, bar)
        estimated = None
        if adapt is not None and items:
            items, estimated = _adapted(items, train_prior, group[0].parent if adapt == "folder" else group[0])
        for path, fl, probs in items:
            entry, probs_scored = _labelled(fl, probs, targets[path], multipliers, sequence_threshold, probs_csv)
            if estimated is not None:
                entry["estimated_class_balance"] = estimated
            if fl.y is not None:
                scored.append((fl.y, probs_scored))
            results["files"][str(fl.path)] = entry
            total_lines += len(fl.texts)
            for c, count in entry["labels"].items():
                results["labels"][c] += count
            bar.set_postfix(lines=total_lines)
    bar.close()
    results["throughput"] = _throughput(results, total_lines, time.perf_counter() - t0)
    if scored:
        results["stats"] = compute_stats(np.concatenate([y for y, _ in scored]), np.concatenate([p for _, p in scored]))
    return results
