"""Corpus stage: read YEDDA ``.ann`` files into labelled lines, chunk and split them.

A YEDDA block is ``[@text#Label*]`` and may span many lines. The label is the
text after the *last* ``#`` of the block, because OCR puts ``#`` inside text
(``/#m`` for µm). Lines come out in reading order with their line number in the
file; text outside blocks is unlabelled and only counted.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from .config import CLASSES
from .errors import DataError


@dataclass(frozen=True, slots=True)
class Line:
    """One non-blank labelled line."""

    doc: str
    line_no: int  # 1-based line number in the source file
    text: str
    label: str  # the raw YEDDA label, e.g. "Misc-exposition"
    block: int  # index of the block in its document, for chunking at block boundaries


@dataclass
class Document:
    """The labelled lines of one file, in reading order."""

    doc_id: str
    lines: list[Line]
    unlabelled_lines: int = 0
    text: str | None = None  # the file's text without the block markup, line for line (as parsed)


@dataclass
class ReadReport:
    """What the reader saw: warnings (``file:line: ...``), counts of labels and skipped lines."""

    files: int = 0
    warnings: list[str] = field(default_factory=list)
    unlabelled_lines: int = 0
    raw_labels: Counter = field(default_factory=Counter)


def default_label_map(label: str) -> str:
    """Map a raw YEDDA label to a class: Nomenclature and Description keep theirs, all else is Misc."""
    return label if label in ("Nomenclature", "Description") else "Misc"


def make_label_map(overrides: Mapping[str, str] | None = None, where: str = "label map"):
    """Return a label-mapping function: ``overrides`` (raw label -> class) over the default.

    ``where`` names the mapping's source in errors.
    """
    overrides = dict(overrides or {})
    for raw, cls in overrides.items():
        if cls not in CLASSES:
            raise DataError(f"{where}: {raw!r} maps to {cls!r}, which is not one of {', '.join(CLASSES)}")

    def mapper(label: str) -> str:
        return overrides.get(label, default_label_map(label))

    return mapper


def parse_yedda(text: str, doc_id: str, report: ReadReport | None = None) -> Document:
    """Parse YEDDA text into a :class:`Document`. Malformed blocks become warnings, never errors."""
    report = report if report is not None else ReadReport()
    newlines = [i for i, ch in enumerate(text) if ch == "\n"]

    def line_at(pos: int) -> int:
        return bisect.bisect_left(newlines, pos) + 1

    def count_unlabelled(segment: str) -> int:
        return sum(1 for t in segment.split("\n") if t.strip(" \t\r\f\v"))

    lines: list[Line] = []
    plain: list[str] = []  # the text without markup: the lines keep their numbers
    unlabelled = 0
    block = 0
    i, n = 0, len(text)
    while i < n:
        start = text.find("[@", i)
        if start == -1:
            unlabelled += count_unlabelled(text[i:])
            plain.append(text[i:])
            break
        unlabelled += count_unlabelled(text[i:start])
        plain.append(text[i:start])
        body_start = start + 2
        close = text.find("*]", body_start)
        reopen = text.find("[@", body_start)
        if close == -1 or (reopen != -1 and reopen < close):
            nxt = reopen if reopen != -1 else n
            where = f"next block opens at line {line_at(reopen)}" if reopen != -1 else "end of file"
            report.warnings.append(
                f"{doc_id}:{line_at(start)}: block opened here is not closed before the {where}; its lines are unlabelled"
            )
            unlabelled += count_unlabelled(text[body_start:nxt])
            plain.append(text[body_start:nxt])
            i = nxt
            continue
        body = text[body_start:close]
        hash_pos = body.rfind("#")
        label = body[hash_pos + 1 :].strip() if hash_pos != -1 else ""
        if hash_pos == -1 or not label or "\n" in label:
            report.warnings.append(f"{doc_id}:{line_at(start)}: block has no label; its lines are unlabelled")
            unlabelled += count_unlabelled(body)
            plain.append(body if hash_pos == -1 or "\n" in label else body[:hash_pos])
            i = close + 2
            continue
        plain.append(body[:hash_pos])
        first_line = line_at(start)
        for offset, raw in enumerate(body[:hash_pos].split("\n")):
            stripped = raw.strip(" \t\r\f\v")
            if stripped:
                lines.append(Line(doc_id, first_line + offset, stripped, label, block))
                report.raw_labels[label] += 1
        block += 1
        i = close + 2
    report.unlabelled_lines += unlabelled
    return Document(doc_id, lines, unlabelled, "".join(plain))


def decode_bytes(data: bytes, doc_id: str, report: ReadReport) -> str:
    """Decode UTF-8, replacing bad bytes with U+FFFD and warning with the first bad line. A file that opens with
    a UTF-16 byte-order mark is read as UTF-16 (and said so): as UTF-8 it would be all bad bytes."""
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        report.warnings.append(f"{doc_id}:1: UTF-16 (byte-order mark); read as UTF-16, not UTF-8")
        return data.decode("utf-16", errors="replace")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        text = data.decode("utf-8", errors="replace")
        report.warnings.append(
            f"{doc_id}:{line}: undecodable byte(s) (first at byte {exc.start}); replaced with U+FFFD"
        )
        return text


def find_ann_files(data_dir: str | Path) -> list[Path]:
    """All ``*.ann`` files under ``data_dir``, sorted; a clear error if there are none."""
    root = Path(data_dir)
    if not root.exists():
        raise DataError(f"data directory {root} does not exist")
    if not root.is_dir():
        raise DataError(f"data path {root} is not a directory")
    files = sorted(p for p in root.rglob("*.ann") if p.is_file())
    if not files:
        raise DataError(f"data directory {root} holds no .ann files")
    return files


def read_corpus(data_dir: str | Path) -> tuple[list[Document], ReadReport]:
    """Read every ``.ann`` file under ``data_dir`` in sorted order."""
    root = Path(data_dir)
    report = ReadReport()
    docs = []
    for path in find_ann_files(root):
        doc_id = path.relative_to(root).as_posix()
        text = decode_bytes(path.read_bytes(), doc_id, report)
        doc = parse_yedda(text, doc_id, report)
        if not doc.lines:
            report.warnings.append(f"{doc_id}:1: no labelled lines")
        docs.append(doc)
        report.files += 1
    return docs, report


def read_texts(texts: Mapping[str, str]) -> tuple[list[Document], ReadReport]:
    """Parse in-memory YEDDA documents (``{doc_id: text}``), e.g. the generated sample corpus."""
    report = ReadReport()
    docs = [parse_yedda(texts[k], k, report) for k in sorted(texts)]
    report.files = len(docs)
    return docs, report


def class_counts(lines: Iterable[Line], label_map=default_label_map) -> dict[str, int]:
    """Line counts per class, in class order."""
    counts = Counter(label_map(line.label) for line in lines)
    return {c: int(counts.get(c, 0)) for c in CLASSES}


def report_lines(docs: list[Document], report: ReadReport, label_map=default_label_map) -> list[str]:
    """Files read and per-class line counts, as lines of text (the reader's warnings are in ``report``)."""
    counts = class_counts((ln for d in docs for ln in d.lines), label_map)
    total = sum(counts.values())
    lines = [f"read {report.files} files: {total} labelled lines, {report.unlabelled_lines} unlabelled lines "
             f"(skipped), {len(report.warnings)} warnings"]
    return lines + [f"  {cls:<13}{n:>8}  {n / max(total, 1):6.1%}" for cls, n in counts.items()]


def warning_summary(report: ReadReport, worst: int = 3) -> str | None:
    """The reader's warnings in one line (how many, in how many files, the files with most), or ``None``:
    a corpus with hundreds of malformed blocks prints one line, not hundreds (each is logged with ``-v``)."""
    if not report.warnings:
        return None
    per_file = Counter(m.group(1) if (m := _WARNING_AT.match(w)) else "?" for w in report.warnings)
    top = ", ".join(f"{name} ({n})" for name, n in per_file.most_common(worst))
    return (f"reader: {len(report.warnings)} warnings (malformed blocks, whose lines are left unlabelled, or bad "
            f"bytes) in {len(per_file)} of {report.files} files; most in {top}; each one with -v")


_WARNING_AT = re.compile(r"^(.*?):(\d+): ")


@dataclass(frozen=True)
class Chunk:
    """A run of whole blocks of one document: the unit that is split and windowed."""

    chunk_id: str
    lines: tuple[Line, ...]


def chunk_documents(docs: Iterable[Document], max_lines: int = 2000) -> list[Chunk]:
    """Cut documents longer than ``max_lines`` into chunks at block boundaries.

    Some SKOL files are whole journal issues of 15-30k lines; as single units they
    would make a document-level split lopsided.
    """
    chunks: list[Chunk] = []
    for doc in docs:
        if not doc.lines:
            continue
        current: list[Line] = []
        k = 0
        for idx, line in enumerate(doc.lines):
            new_block = idx == 0 or line.block != doc.lines[idx - 1].block
            if new_block and len(current) >= max_lines:
                chunks.append(Chunk(f"{doc.doc_id}#{k}", tuple(current)))
                current, k = [], k + 1
            current.append(line)
        chunks.append(Chunk(f"{doc.doc_id}#{k}", tuple(current)))
    return chunks


SPLITS = ("train", "val", "test")


def split_chunks(chunks: list[Chunk], seed: int = 0, val_fraction: float = 0.15,
                 test_fraction: float = 0.15) -> dict[str, list[str]]:
    """Assign chunks to train/val/test, deterministically from ``seed``.

    Whole chunks go to one split, so no line is in two splits. Returns chunk ids
    per split, each list in reading order (sorted id).
    """
    ids = sorted(c.chunk_id for c in chunks)
    if len(ids) < MIN_SPLIT_DOCS:
        raise DataError(f"need at least {MIN_SPLIT_DOCS} documents (or chunks) to split train/val/test, got {len(ids)}")
    order = np.random.default_rng(seed).permutation(len(ids))
    n_val = max(1, int(round(val_fraction * len(ids))))
    n_test = max(1, int(round(test_fraction * len(ids))))
    if n_val + n_test >= len(ids):
        n_val, n_test = 1, 1
    picked = [ids[i] for i in order]
    out = {
        "test": picked[:n_test],
        "val": picked[n_test : n_test + n_val],
        "train": picked[n_test + n_val :],
    }
    return {k: sorted(out[k]) for k in SPLITS}


SPLIT_BY = ("chunk", "volume", "journal")
MIN_SPLIT_DOCS = 3  # one each for train, validation and test


def group_of(doc_id: str, by: str) -> str:
    """The group of a document path: its journal (first folder) or volume (its folder), as in
    ``Mycotaxon/Vol117/paper.ann``. A file outside any folder has neither."""
    folders = doc_id.split("/")[:-1]
    if not folders:
        raise DataError(f"--split-by {by}: {doc_id} is not inside a journal folder (expected "
                        "JOURNAL/VOLUME/FILE.ann); a flat directory can only be split by chunk")
    return folders[0] if by == "journal" else "/".join(folders)


def split_groups(chunks: list[Chunk], by: str, seed: int = 0, test_groups: list[str] | None = None,
                 val_fraction: float = 0.15, test_fraction: float = 0.15) -> tuple[dict[str, list[str]], dict]:
    """Hold out whole groups (journals or volumes): ``(chunk ids per split, the split's spec)``.

    The test split is ``test_groups`` (or about ``test_fraction`` of the groups, drawn with ``seed``);
    no test group has a line in train or val. Validation takes whole groups too when at least three
    groups remain, else a ``val_fraction`` of the remaining chunks (a journal split of two journals
    validates within the training journal). The spec names the groups of each split.
    """
    doc_group = {c.chunk_id: group_of(c.chunk_id.rsplit("#", 1)[0], by) for c in chunks}
    groups = sorted(set(doc_group.values()))
    rng = np.random.default_rng(seed)
    if test_groups:
        for g in test_groups:
            if g not in groups:
                raise DataError(f"--test-group {g!r}: no such {by} in the corpus; {by}s: {', '.join(groups)}")
        test = sorted(set(test_groups))
    else:
        test = sorted(rng.permutation(groups)[:max(1, int(round(test_fraction * len(groups))))].tolist())
    rest = [g for g in groups if g not in test]
    if not rest:
        raise DataError(f"--split-by {by}: {len(groups)} {by}(s) ({', '.join(groups)}); at least one must stay "
                        "out of the test split to train on")
    if len(rest) >= 3:
        val = sorted(rng.permutation(rest)[:max(1, int(round(val_fraction * len(groups))))].tolist())
        split = {name: sorted(c for c, g in doc_group.items() if g in members)
                 for name, members in (("test", test), ("val", val),
                                       ("train", [g for g in rest if g not in val]))}
    else:
        pool = sorted(c for c, g in doc_group.items() if g in rest)
        if len(pool) < 2:
            raise DataError(f"--split-by {by}: the training {by} has {len(pool)} chunk(s); need 2 to hold one out "
                            "for validation")
        n_val = min(len(pool) - 1, max(1, int(round(val_fraction * len(pool)))))
        held = set(rng.permutation(pool)[:n_val].tolist())
        val = None
        split = {"test": sorted(c for c, g in doc_group.items() if g in test),
                 "val": sorted(held), "train": sorted(c for c in pool if c not in held)}
    spec = {"by": by, "seed": seed, "test_groups": test, "val_groups": val,
            "train_groups": sorted(rest if val is None else [g for g in rest if g not in val])}
    return {k: split[k] for k in SPLITS}, spec


def fingerprint_lines(chunks: Iterable[Chunk], label_overrides: Mapping[str, str] | None = None,
                      split_spec: Mapping | None = None) -> str:
    """A content hash of the labelled lines (text, label, position), of any label mapping and of a group
    split's settings (``split_spec``; the default chunk split adds nothing): the data fingerprint."""
    h = hashlib.sha256()
    if label_overrides:
        h.update(repr(sorted(label_overrides.items())).encode())
    if split_spec:
        h.update(json.dumps(split_spec, sort_keys=True).encode())
    for chunk in chunks:
        h.update(chunk.chunk_id.encode())
        for ln in chunk.lines:
            h.update(f"\x00{ln.line_no}\x01{ln.label}\x02{ln.text}".encode())
    return h.hexdigest()[:16]
