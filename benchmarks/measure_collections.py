"""Time spent in garbage collection and in tracing during one small `tune`, in this process.

    python benchmarks/measure_collections.py FOLDER

Runs the test suite's shared study (tests/support.py: `SharedStudy.tune_args`) on a new storage in
FOLDER: 40 sample documents, the tiny model, 4 trials, 2 folds x 1 repeat, top 2, 2 refits, one
process, one TensorFlow thread. Prints the wall time, the seconds inside collections (``gc.callbacks``)
and how many functions TensorFlow traced (concrete functions created) and the seconds that took.
"""

from __future__ import annotations

import gc
import os
import sys
import time
from pathlib import Path

for _var in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS"):
    os.environ[_var] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


class Clock:
    """Seconds in each kind of work, summed over the run."""

    def __init__(self) -> None:
        self.gc_seconds, self.collections, self.traces, self.trace_seconds = 0.0, 0, 0, 0.0
        self._t0 = 0.0

    def on_gc(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._t0 = time.perf_counter()
        else:
            self.gc_seconds += time.perf_counter() - self._t0
            self.collections += 1

    def count_traces(self) -> None:
        from tensorflow.python.eager.polymorphic_function import tracing_compilation

        create = tracing_compilation._create_concrete_function

        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return create(*args, **kwargs)
            finally:
                self.traces += 1
                self.trace_seconds += time.perf_counter() - t0

        tracing_compilation._create_concrete_function = timed


def main(folder: Path) -> None:
    from support import SharedStudy

    from weight_tuner import logs

    clock = Clock()
    logs.import_tensorflow()  # what the CLI does first (and, from c002628 on, freezes the import's objects)
    clock.count_traces()
    gc.callbacks.append(clock.on_gc)
    study = SharedStudy(folder)
    t0 = time.perf_counter()
    study.build()
    wall = time.perf_counter() - t0
    print(f"tune + sample: {wall:.1f} s; garbage collection {clock.gc_seconds:.2f} s in {clock.collections} "
          f"collections; {clock.traces} traces, {clock.trace_seconds:.2f} s")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
