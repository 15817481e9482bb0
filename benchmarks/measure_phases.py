"""Peak resident memory between consecutive log lines of any `weight-tuner` command.

    python benchmarks/measure_phases.py tune --data DIR --trials 1 --no-confirm --cache-dir ''

A thread samples VmRSS every 50 ms; at every log line the peak since the previous one is recorded
against that previous line. The table goes to stderr at the end: peak MiB, then the log line that
began the interval (the reader's per-file warnings are left out).
"""

import logging
import sys
import threading
import time

from weight_tuner.cli import main
from weight_tuner.logs import ROOT


def resident_mib() -> int:
    return next(int(line.split()[1]) // 1024 for line in open("/proc/self/status") if line.startswith("VmRSS"))


class PhasePeaks(logging.Handler):
    """Peak RSS per interval between log lines."""

    def __init__(self):
        super().__init__()
        self.current, self.peak, self.rows = "start", resident_mib(), []
        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self):
        while True:
            self.peak = max(self.peak, resident_mib())
            time.sleep(0.05)

    def emit(self, record):
        self.rows.append((self.current, self.peak))
        self.current, self.peak = record.getMessage(), resident_mib()

    def table(self) -> str:
        rows = self.rows + [(self.current, self.peak)]
        return "\n".join(f"{peak:7d}  {message[:90]}" for message, peak in rows
                         if not message.startswith("warning"))


if __name__ == "__main__":
    phases = PhasePeaks()
    logging.getLogger(ROOT).addHandler(phases)
    try:
        rc = main(sys.argv[1:])
    finally:
        print(phases.table(), file=sys.stderr)
    sys.exit(rc)
