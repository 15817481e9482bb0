"""Ctrl-C and SIGTERM for long jobs: the first stops the work at a safe point, a second exits at once.

Python's own SIGINT handler raises wherever the main thread happens to be, also inside a
finaliser run by ``gc.collect()`` (Optuna collects after every trial), where the exception is
discarded, or inside Optuna's bookkeeping, where a trial can be left RUNNING with a heartbeat
thread that keeps the process alive. So while trials or confirmation units run, a
:class:`StopGuard` only records the first signal; the work raises it between two training
batches (:meth:`StopGuard.check`), where a trial is failed and re-queued cleanly. A second
signal fails the running trial in the storage and ends the process at once.
"""

from __future__ import annotations

import os
import signal
import sys
from contextlib import contextmanager
from typing import Callable


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that the running trial is marked FAIL."""


EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}


class StopGuard:
    """The process's SIGINT and SIGTERM handler (one per command, installed by the CLI's ``main``).

    Outside :meth:`safe_points` the first signal raises at once (``KeyboardInterrupt`` or
    :class:`Terminated`). Inside, it is only recorded, and :meth:`check` raises it. Any further
    signal calls ``abandon`` (set by the running trial: fail it in the storage) and exits with
    130 (SIGINT) or 143 (SIGTERM) without unwinding. Every signal is first passed to the ``forward``
    callbacks (``tune``'s local workers, which run in a session of their own).
    """

    def __init__(self) -> None:
        self.requested: int | None = None
        self.abandon: Callable[[], None] | None = None
        self.forward: list[Callable[[int], None]] = []
        self._deferred = False
        self._previous: dict[int, object] = {}

    def install(self) -> None:
        """Handle SIGINT and SIGTERM, whatever disposition the process inherited (a background
        job of a non-interactive shell starts with SIGINT ignored)."""
        for signum in EXIT_CODES:
            self._previous[signum] = signal.signal(signum, self._handle)

    def uninstall(self) -> None:
        """Restore the handlers that were there before :meth:`install`."""
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    @contextmanager
    def safe_points(self):
        """Within this block, the first signal waits for :meth:`check`."""
        self._deferred = True
        try:
            yield self
        finally:
            self._deferred = False

    def check(self) -> None:
        """Raise the recorded signal, if any: call this where stopping is safe."""
        if self.requested is not None:
            raise Terminated() if self.requested == signal.SIGTERM else KeyboardInterrupt()

    def _handle(self, signum, frame) -> None:
        for forward in self.forward:
            forward(signum)
        if self.requested is not None:  # a second signal during the shutdown: exit now
            print(f"weight-tuner: {signal.Signals(signum).name} again: exiting now; the running trial, if any, "
                  "is marked FAIL.", file=sys.stderr, flush=True)
            if self.abandon is not None:
                try:
                    self.abandon()
                except Exception as exc:  # the exit must happen; say what could not be saved
                    print(f"weight-tuner: could not mark the running trial FAIL: {exc}", file=sys.stderr, flush=True)
            os._exit(EXIT_CODES.get(self.requested, 130))
        self.requested = signum
        if not self._deferred:
            self.check()


def _fail_after_exit(url: str, study_name: str, trial_id: int, pid: int) -> None:
    """The detached helper of a second signal: wait for ``pid`` to end, then fail its trial."""
    import time

    from .retries import fail_abandoned_trial

    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    fail_abandoned_trial(url, study_name, trial_id)


if __name__ == "__main__":  # study name, trial id, pid; the storage URL in the environment (never in argv)
    from .paths import STORAGE_ENV

    _fail_after_exit(os.environ[STORAGE_ENV], sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
