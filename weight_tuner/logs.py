"""Progress output: one ``logging`` setup, made by the CLI (never by an import).

Modules log progress with ``logging.getLogger(__name__)``; a command's results (tables, "wrote
X") are printed to stdout by the CLI. :func:`configure` sends our log records to stderr through
``tqdm.write``, so progress bars are not torn, and sets the levels of Optuna and TensorFlow:

======  ============================  ==============  ===========================
flag    weight_tuner                  Optuna          TensorFlow start-up log
======  ============================  ==============  ===========================
``-q``  warnings only, no bars        warnings        hidden
(none)  progress (INFO)               warnings        hidden
``-v``  details (DEBUG)               INFO            shown
======  ============================  ==============  ===========================
"""

from __future__ import annotations

import gc
import importlib
import logging
import os
import sys
import warnings

from .paths import scrub

ROOT = "weight_tuner"


class _TqdmHandler(logging.Handler):
    """Writes through ``tqdm.write`` to the current ``sys.stderr`` (looked up per record)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # logging must never raise into the work
            self.handleError(record)


class _Formatter(logging.Formatter):
    """One line per record; every form of the storage password in it (``secrets``) shown as ``***``."""

    def __init__(self, secrets: list[str] | tuple = ()) -> None:
        super().__init__()
        self.secrets = list(secrets)

    def format(self, record: logging.LogRecord) -> str:
        text = scrub(record.getMessage(), self.secrets)
        return f"{record.levelname.lower()}: {text}" if record.levelno >= logging.WARNING else text


def level_for(verbosity: int) -> int:
    """``-q`` (-1) -> WARNING, default (0) -> INFO, ``-v`` (1+) -> DEBUG."""
    return logging.WARNING if verbosity < 0 else logging.DEBUG if verbosity > 0 else logging.INFO


def configure(verbosity: int = 0, secrets: list[str] | tuple = ()) -> None:
    """Set up output for a command; calling it again replaces the previous setup. ``secrets``: the forms of the
    storage password (:func:`.paths.url_secrets`), masked in every record, a driver's message included."""
    import optuna

    logger = logging.getLogger(ROOT)
    for handler in [h for h in logger.handlers if isinstance(h, _TqdmHandler)]:
        logger.removeHandler(handler)
    handler = _TqdmHandler()
    handler.setFormatter(_Formatter(secrets))
    logger.addHandler(handler)
    logger.setLevel(level_for(verbosity))
    logger.propagate = False
    optuna.logging.set_verbosity(logging.INFO if verbosity > 0 else logging.WARNING)
    # Heartbeats, metric names, notes and WilcoxonPruner are experimental in Optuna; we use them knowingly.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if verbosity > 0 else "3")
    # TensorFlow's Python warnings (e.g. retracing when an ensemble's members predict in turn) only with -v.
    logging.getLogger("tensorflow").setLevel(logging.WARNING if verbosity > 0 else logging.ERROR)


def progress_enabled() -> bool:
    """Whether progress (INFO) is shown: bars are hidden with ``-q``."""
    return logging.getLogger(ROOT).isEnabledFor(logging.INFO)


def import_tensorflow(verbosity: int = 0) -> None:
    """Import TensorFlow now, hiding the lines its native code writes to stderr while loading
    (oneDNN, CPU features) unless ``-v``; they bypass every Python logging setting. The objects the
    first import leaves are then frozen out of garbage collection (:func:`gc.freeze`)."""
    first = "tensorflow" not in sys.modules
    quiet = verbosity <= 0 and first
    if quiet:
        saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
        sys.stderr.flush()
        os.dup2(null, 2)
    try:
        importlib.import_module(f"{__package__}.model")  # selects the Keras backend, then imports TensorFlow
    finally:
        if quiet:
            os.dup2(saved, 2)
            os.close(saved)
            os.close(null)
    if first:
        # The import leaves about 400,000 objects that live as long as the process. Freezing them keeps
        # every later collection from scanning them: Optuna collects after each trial (gc_after_trial),
        # which took 0.2-0.3 s a trial, longer than an epoch of a small model.
        gc.collect()
        gc.freeze()
