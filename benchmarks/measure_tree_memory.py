"""Peak resident memory of a command and all its descendants together (``/usr/bin/time -v`` reports one
process's peak: the largest child's, not their sum).

    python benchmarks/measure_tree_memory.py OUT.json -- weight-tuner tune --data ../shared/skol-corpus --trials 30

Samples every process of the tree once a second (``VmRSS`` and CPU time in /proc) and writes the peak of
the sum, each process's own peak, the wall time and the cores the tree kept busy in each second (where a
machine sat idle) to OUT.json; the command's exit code is passed on.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path


def _stat_fields(pid: int) -> list[str]:
    """The fields of /proc/PID/stat after the command name (state first), or [] for a process gone."""
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def _tree(root: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat_fields(int(entry.name))):
            parents[int(entry.name)] = int(fields[1])
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += [p for p, pp in parents.items() if pp == pid]
    return found


def _rss_kib(pid: int) -> int:
    try:
        for line in (Path("/proc") / str(pid) / "status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _cpu_seconds(pid: int) -> float:
    """User and system CPU time of one process so far."""
    fields = _stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK") if fields else 0.0


def main(argv: list[str]) -> int:
    out, command = argv[0], argv[argv.index("--") + 1:]
    t0 = time.monotonic()
    proc = subprocess.Popen(command)
    peak_sum, peaks, cpu, busy = 0, {}, {}, []
    while proc.poll() is None:
        tree = _tree(proc.pid)
        sizes = {pid: _rss_kib(pid) for pid in tree}
        now = {pid: _cpu_seconds(pid) for pid in tree}  # a process first seen started after the command did
        busy.append(round(sum(c - cpu.get(pid, 0.0) for pid, c in now.items()), 2))
        cpu.update(now)
        peak_sum = max(peak_sum, sum(sizes.values()))
        for pid, kib in sizes.items():
            peaks[pid] = max(peaks.get(pid, 0), kib)
        time.sleep(1.0)
    Path(out).write_text(json.dumps({"command": command, "returncode": proc.returncode,
                                     "wall_seconds": round(time.monotonic() - t0, 1),
                                     "peak_rss_all_mib": round(peak_sum / 1024),
                                     "peak_rss_per_process_mib": {str(k): round(v / 1024) for k, v in peaks.items()
                                                                  if v},
                                     "cores_busy_each_second": busy[1:]}, indent=1))
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
