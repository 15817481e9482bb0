"""Local workers: ``tune --jobs N`` fills the machine with N processes on one study.

``tune`` is one of the N; it starts N - 1 ``weight-tuner worker`` processes beside itself once the
study exists, and each takes trials, then the confirmation's unit runs, from the storage as any
remote worker does; then, where ``tune`` makes refits, the refits (they share the study's models
folder). Optuna's storage is the only coordinator: there is no queue here, only processes to start,
watch and stop.

- **Threads**: each process gets its share of the cores (TensorFlow's intra- and inter-op pools,
  OpenMP), set before TensorFlow starts; N processes with a full pool each would contend.
- **Secrets**: a child gets the storage URL in its environment (:data:`STORAGE_ENV`), never on its
  command line, where every local user can read it (``ps``, ``/proc/PID/cmdline``).
- **Signals**: children run in their own session, so a terminal's Ctrl-C reaches ``tune`` alone,
  which passes each signal on once: the first stops every process at a safe point, a second at once.
- **Failures**: a child that dies (kill -9) leaves its trial RUNNING; Optuna's heartbeat fails it
  and re-queues it once, and the other processes take it. A child whose ``tune`` dies (kill -9, where
  nothing is passed on) stops itself as at a SIGTERM (:func:`stop_with_parent`): no worker outlives its
  ``tune`` to wait for a refit plan that will never come.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid

from .paths import STORAGE_ENV

logger = logging.getLogger(__name__)

JOBS_ENV = "WEIGHT_TUNER_JOBS"
RUN_ENV = "WEIGHT_TUNER_RUN"  # the run of tune a local worker belongs to: it stays to take that run's refits
PARENT_ENV = "WEIGHT_TUNER_PARENT"  # the pid of a local worker's tune: the worker stops when that process is gone
THREAD_ENV = ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS")
STOP_GRACE_S = 120.0  # how long a stopping child may take to reach its safe point before it is killed
PARENT_POLL_S = 1.0


def usable_cores() -> int:
    """The cores this process may run on (a container's or ``taskset``'s limit, which ``os.cpu_count`` ignores)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_jobs() -> int:
    """``tune --jobs``'s default: ``$WEIGHT_TUNER_JOBS`` if set, else every usable core."""
    text = os.environ.get(JOBS_ENV, "").strip()
    return int(text) if text.isdigit() and int(text) >= 1 else usable_cores()


def thread_share(jobs: int) -> dict[str, str]:
    """The thread settings of one of ``jobs`` processes sharing this machine's usable cores."""
    n = str(max(1, usable_cores() // jobs))
    return {var: n for var in THREAD_ENV}


def share_threads(jobs: int) -> None:
    """Give this process its share of the cores, unless the user set the thread counts; call it before
    TensorFlow is imported (its pools are sized once). One job keeps TensorFlow's own defaults."""
    if jobs > 1:
        for var, value in thread_share(jobs).items():
            os.environ.setdefault(var, value)


class LocalWorkers:
    """The ``jobs - 1`` worker processes that ``tune`` runs beside itself, as a context manager.

    ``worker_args`` is the ``weight-tuner worker`` command line after the command name, without
    ``--storage``: the URL goes through the environment. On leaving the block normally the children
    are waited for (they end once no trial, unit run or refit is left to take); on an exception they are
    stopped at a safe point, then killed if they take longer than :data:`STOP_GRACE_S`.
    """

    def __init__(self, jobs: int, storage_url: str, worker_args: list[str], refits: bool = False):
        self.jobs, self.storage_url, self.worker_args = jobs, storage_url, list(worker_args)
        # With refits, the children stay after the confirmation until this run has planned its refits
        # (deploy.refits.Refits, which records this id), and take them beside it.
        self.run_id = uuid.uuid4().hex if refits else None
        self.processes: list[subprocess.Popen] = []
        self._watchers: list[threading.Thread] = []

    def command(self) -> list[str]:
        """A child's command line (it holds no storage URL)."""
        return [sys.executable, "-m", "weight_tuner.cli", "-q", "worker", *self.worker_args]

    def environment(self) -> dict[str, str]:
        """A child's environment: its share of threads (unless the user set them, as for this process in
        :func:`share_threads`) and the storage URL."""
        env = {**thread_share(self.jobs), **os.environ, STORAGE_ENV: self.storage_url, PARENT_ENV: str(os.getpid())}
        env.pop(RUN_ENV, None)
        return env if self.run_id is None else {**env, RUN_ENV: self.run_id}

    def start(self) -> None:
        """Start the children, each with its share of threads and the storage URL in its environment."""
        env = self.environment()
        for _ in range(self.jobs - 1):
            proc = subprocess.Popen(self.command(), env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    start_new_session=True)
            self.processes.append(proc)
            watcher = threading.Thread(target=self._watch, args=(proc,), daemon=True)
            watcher.start()
            self._watchers.append(watcher)
        if self.processes:
            logger.info(f"started {len(self.processes)} local worker(s) beside this process "
                        f"(--jobs {self.jobs}, {thread_share(self.jobs)['TF_NUM_INTRAOP_THREADS']} thread(s) each): "
                        f"pids {', '.join(str(p.pid) for p in self.processes)}")

    def _watch(self, proc: subprocess.Popen) -> None:
        code = proc.wait()
        if code not in (0, 130, 143):
            logger.warning(f"local worker {proc.pid} exited with code {code}; its running trial or unit run, if any, "
                           "is failed by its heartbeat and taken again by the other processes")

    def forward(self, signum: int) -> None:
        """Pass a signal on to every child still running (the first stops them at a safe point)."""
        for proc in self.processes:
            if proc.poll() is None:
                try:
                    proc.send_signal(signum)
                except ProcessLookupError:
                    pass

    def wait(self, timeout: float | None = None) -> None:
        """Wait for every child to end; kill those still running ``timeout`` seconds from now (one deadline for
        all of them, not ``timeout`` each)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for proc in self.processes:
            try:
                proc.wait(timeout=None if deadline is None else max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                logger.warning(f"local worker {proc.pid} did not stop within {timeout:.0f}s: killed")
                proc.kill()
                proc.wait()

    def __enter__(self) -> "LocalWorkers":
        self.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None and any(p.poll() is None for p in self.processes):
            interrupted = isinstance(exc, KeyboardInterrupt)
            if not interrupted:  # a signal was already passed on by the guard; an error stops them here
                self.forward(signal.SIGTERM)
            self.wait(STOP_GRACE_S)
        else:
            self.wait(STOP_GRACE_S)


def stop_with_parent(grace: float = STOP_GRACE_S, poll: float = PARENT_POLL_S) -> threading.Thread | None:
    """In a local worker (``$WEIGHT_TUNER_PARENT`` set by :class:`LocalWorkers`): stop this process when its
    ``tune`` is gone, by signalling itself SIGTERM (a safe-point stop, as when ``tune`` passes a signal on),
    then once more after ``grace`` seconds (the second signal exits at once). Returns the watching thread.

    A parent killed with SIGKILL passes nothing on, and the worker, in a session of its own, gets no
    signal from the terminal either; its parent id changes when it is re-parented, which it checks.
    """
    parent = os.environ.get(PARENT_ENV, "")
    if not parent.isdigit():
        return None

    def watch() -> None:
        while os.getppid() == int(parent):
            time.sleep(poll)
        logger.warning(f"tune (pid {parent}) is gone: this local worker stops")
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(grace)
        os.kill(os.getpid(), signal.SIGTERM)

    watcher = threading.Thread(target=watch, name="parent-watch", daemon=True)
    watcher.start()
    return watcher


# The data options a local worker repeats, so that it prepares the same data (from the feature cache).
_DATA_OPTIONS = ("data", "sample_docs", "sample_rare_nomenclature", "split_seed", "split_by", "cache_dir",
                 "max_chunk_lines", "label_map")


def worker_command_line(args, n_trials: int | None = None) -> list[str]:
    """The ``worker`` command line of ``tune``'s local workers (after ``worker``), without the storage URL: ``tune``'s
    data and planning options, and ``n_trials`` (default ``--trials``; with ``--trials auto``, the cap, while the rule
    in the study stops every process alike)."""
    out = ["--study", args.study, "--trials", str(n_trials or args.trials), "--seed", str(args.seed),
           "--heartbeat", str(args.heartbeat)]
    for name in _DATA_OPTIONS:
        value = getattr(args, name)
        if value is not None:
            out += [f"--{name.replace('_', '-')}", str(value)]
    for group in args.test_group or []:
        out += ["--test-group", group]
    if args.trial_timeout is not None:
        out += ["--trial-timeout", str(args.trial_timeout)]
    if args.members:
        out += ["--members", args.members]
    if args.no_confirm:
        out.append("--no-confirm")
    if args.no_racing:  # whichever process reaches the end of the search first plans the confirmation
        out.append("--no-racing")
    return out
