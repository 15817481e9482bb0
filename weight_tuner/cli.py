"""Command line: ``weight-tuner <command>``; every Makefile target is a thin wrapper over it."""

from __future__ import annotations

import argparse
import os
import sys
import time

from . import commands as cmd
from .confirm.deployed import DEPLOYED_KINDS
from .corpus import MIN_SPLIT_DOCS, SPLIT_BY
from .deploy.refits import DEFAULT_REFITS
from .errors import WeightTunerError
from .paths import DEFAULT_CACHE_DIR, STORAGE_ENV, display_url, scrub, url_secrets
from .posthoc import ADAPT_CHOICES
from .sample import SAMPLE_DOCS
from .search.stopping import StoppingRule
from .signals import StopGuard, Terminated
from .space import DEFAULT_EVALUATION, DESIGNS, UNITS_BY
from .workers import JOBS_ENV, default_jobs, share_threads

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error on one line (``weight-tuner tune: error: ...``) and exit 2."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def study_name(text: str) -> str:
    """An argparse type: a study name, which also names files and folders under ``studies/``: no path
    separator, no ``..``, not empty."""
    if not text.strip() or "/" in text or "\\" in text or ".." in text or "\0" in text:
        raise argparse.ArgumentTypeError(f"{text!r} is not a study name (no '/', '\\' or '..': it names files "
                                         "under studies/)")
    return text


def int_at_least(low: int):
    """An argparse type: an integer >= ``low``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {value}")
        return value
    return parse


def positive_float(text: str) -> float:
    """An argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text}")
    return value


def trials_or_auto(text: str) -> int | str:
    """An argparse type: ``auto`` or an integer >= 1."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return int_at_least(1)(text)
    except argparse.ArgumentTypeError as exc:
        raise argparse.ArgumentTypeError(f"{exc} or 'auto'") from None


def duration(text: str) -> str:
    """An argparse type: a duration (``90s``, ``30m``, ``2h``, ``1h30m``), kept as written."""
    from .budget import parse_duration
    from .errors import ConfigError

    try:
        parse_duration(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--timeout: ")) from None
    return text


def seed_list(text: str) -> list[int]:
    """An argparse type: comma-separated integer seeds, e.g. ``0,1,2``."""
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, e.g. 0,1,2; got {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"expected distinct comma-separated integers, got {text!r}")
    return seeds


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default=None, help="directory of YEDDA .ann files (default: the embedded sample corpus)")
    p.add_argument("--sample-docs", type=int_at_least(MIN_SPLIT_DOCS), default=None,
                   help=f"size of the sample corpus in documents (default {SAMPLE_DOCS})")
    p.add_argument("--sample-rare-nomenclature", type=int_at_least(1), default=1, metavar="K",
                   help="sample corpus only: keep each Nomenclature block with probability 1/K (K times rarer)")
    p.add_argument("--split-seed", type=int, default=0, help="seed of the train/val/test split")
    p.add_argument("--split-by", choices=SPLIT_BY, default=SPLIT_BY[0],
                   help="chunk (default): random document chunks; volume or journal: hold out whole groups, "
                        "taken from the folders (JOURNAL/VOLUME/FILE.ann)")
    p.add_argument("--test-group", action="append", default=None, metavar="NAME",
                   help="with --split-by: the journal (or volume, e.g. Mycotaxon/Vol117) to test on; repeatable")
    p.add_argument("--cache-dir", default=str(DEFAULT_CACHE_DIR), help="feature cache directory ('' disables it)")
    p.add_argument("--max-chunk-lines", type=int_at_least(1), default=2000,
                   help="cut longer documents into chunks at block boundaries before splitting")
    p.add_argument("--label-map", default=None,
                   help='JSON mapping raw YEDDA labels to classes, over the default, e.g. \'{"Diagnosis": "Description"}\'')


def _add_study_args(p: argparse.ArgumentParser, study_default: str | None = "default", required: bool | None = None,
                    study_help: str = "Optuna study name") -> None:
    """``--study`` (required where it has no default, unless ``required`` says otherwise) and ``--storage``."""
    p.add_argument("--study", type=study_name, default=study_default,
                   required=study_default is None if required is None else required, help=study_help)
    p.add_argument("--storage", default=None,
                   help=f"Optuna RDB storage URL (default ${STORAGE_ENV} if set, else sqlite:///studies/<study>.db; "
                        "postgresql://... scales out). A URL with a password is best given through the environment")


def _add_seed_arg(p: argparse.ArgumentParser, help: str) -> None:
    p.add_argument("--seed", type=int, default=0, help=f"{help} (default 0)")


def _add_worker_args(p: argparse.ArgumentParser) -> None:
    _add_seed_arg(p, "sampler seed")
    p.add_argument("--trial-timeout", type=positive_float, default=None,
                   help="fail a trial that runs longer than this many seconds (checked after each epoch)")
    p.add_argument("--heartbeat", type=int_at_least(1), default=10,
                   help="heartbeat interval in seconds; a trial of a killed worker is failed and retried "
                        "after three missed beats")
    p.add_argument("--members", default=None, metavar="DIR",
                   help="where the confirmation's models are kept (an Optuna artifact store; default "
                        "studies/<study>/members). Workers on other machines need one shared folder")


def _output_options() -> argparse.ArgumentParser:
    """``-v/-q``, accepted by every command (before or after its name)."""
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_mutually_exclusive_group()
    group.add_argument("-v", "--verbose", action="store_const", const=1, dest="verbosity", default=argparse.SUPPRESS,
                       help="more output: details, Optuna's log and TensorFlow's start-up log")
    group.add_argument("-q", "--quiet", action="store_const", const=-1, dest="verbosity", default=argparse.SUPPRESS,
                       help="warnings and results only: no progress lines or bars")
    return common


def _data_commands(command) -> None:
    """Corpus, sample and train: a corpus read, written or trained on once."""
    p = command("corpus", cmd.cmd_corpus, "read a corpus and print per-class line counts")
    p.add_argument("--data", default=None, help="directory of YEDDA .ann files (default: the sample corpus)")
    p.add_argument("--sample-docs", type=int_at_least(1), default=None,
                   help=f"size of the sample corpus in documents (default {SAMPLE_DOCS}); any size can be read, "
                        f"a study needs at least {MIN_SPLIT_DOCS}")

    p = command("sample", cmd.cmd_sample, "write the embedded sample corpus as .ann files")
    p.add_argument("-o", "--out", required=True, help="folder to write the .ann files into")
    p.add_argument("--docs", type=int_at_least(1), default=60, help="documents to write (default 60)")
    _add_seed_arg(p, "seed of the generated text")

    p = command("train", cmd.cmd_train, "train one model and report validation and test stats", tf=True)
    _add_data_args(p)
    p.add_argument("--config", default=None, help="JSON model config (the guide's keys)")
    p.add_argument("--weights", default=None, help="class weights: inline JSON or a JSON file (an export works)")
    p.add_argument("-o", "--out", default="runs/train_stats.json", help="where to write the stats as JSON")
    p.add_argument("--save-model", default=None, help="save the trained model (.keras) here")


def _study_commands(command) -> None:
    """Tune, then the commands that add trials or unit runs to its study."""
    p = command("tune", cmd.cmd_tune, "run or resume the Optuna study over class weights", tf=True)
    _add_data_args(p)
    _add_study_args(p)
    p.add_argument("--trials", type=trials_or_auto, default=16,
                   help="finished (complete or pruned) trials the study should hold in total; auto: stop once "
                        f"{StoppingRule.patience} trials in a row have not moved the top candidates by more than the "
                        f"validation noise (from {StoppingRule.min_trials} trials on, at most --max-trials)")
    p.add_argument("--max-trials", type=int_at_least(1), default=StoppingRule.max_trials, metavar="N",
                   help=f"with --trials auto: the most trials the study holds (default {StoppingRule.max_trials})")
    p.add_argument("--config", default=None,
                   help="study config (.toml with [space], [model], [pruner]) or a model config (.json)")
    _add_worker_args(p)
    p.add_argument("--jobs", type=int_at_least(1), default=None, metavar="N",
                   help=f"processes on this machine, each with its share of the cores: this one and N - 1 local "
                        f"workers (default ${JOBS_ENV} if set, else every core this process may use: "
                        f"{default_jobs()} here)")
    p.add_argument("--objectives", default=None,
                   help="comma-separated objectives; two or more search the Pareto front, e.g. "
                        "nomenclature_f1,description_f1 (default: important_f1)")
    p.add_argument("--design", choices=DESIGNS, default=None,
                   help="confirm (default): search on one split, then confirm the top candidates on folds x "
                        "repeats; cv: score every trial on the units with Wilcoxon pruning, then confirm")
    p.add_argument("--folds", type=int_at_least(2), default=None,
                   help=f"folds of the non-test chunks per repeat (default {DEFAULT_EVALUATION['folds']})")
    p.add_argument("--repeats", type=int_at_least(1), default=None,
                   help=f"repeats, each a new partition and seed (default {DEFAULT_EVALUATION['repeats']})")
    p.add_argument("--units-by", choices=UNITS_BY, default=None,
                   help="what one fold of the confirmation's units holds whole: chunk, volume or journal (a unit "
                        "then scores groups its training folds have no line of; needs JOURNAL/VOLUME/FILE.ann "
                        f"folders; default {DEFAULT_EVALUATION['units_by']})")
    p.add_argument("--confirm-top", type=int_at_least(1), default=None,
                   help=f"distinct weight vectors confirmed against no weights (default {DEFAULT_EVALUATION['top']})")
    p.add_argument("--timeout", type=duration, default=None, metavar="DURATION",
                   help="one wall-clock budget for the whole tune (search, confirmation, refits), e.g. 90s, 30m, "
                        "2h: shared through the study by every worker; no trial, unit run or refit starts once it "
                        "is spent, the search leaves the time the rest is expected to need, and a decision made on "
                        "what finished says so")
    p.add_argument("--no-confirm", action="store_true", help="run the search only; make no recommendation")
    p.add_argument("--no-racing", action="store_true",
                   help="train every confirmation run, also those of a candidate that can no longer win (a new "
                        "confirmation plan only; the decision is the same either way)")
    p.add_argument("--refits", type=int_at_least(0), default=DEFAULT_REFITS, metavar="N",
                   help="after the decision, train the recommended configuration N times on every non-test line "
                        f"(seeds seed, seed + 10, ...): the default model of predict --study (default "
                        f"{DEFAULT_REFITS}; 0: none, predict --study then uses the confirmation's models)")

    _helper_commands(command)


def _helper_commands(command) -> None:
    """Worker and screen: the commands that add to a study ``tune`` made."""
    p = command("worker", cmd.cmd_worker, "join an existing study (created by tune) as one more worker", tf=True)
    _add_data_args(p)
    _add_study_args(p, study_default=None)
    p.add_argument("--trials", type=int_at_least(1), required=True,
                   help="finished trials the study should hold in total")
    p.add_argument("--no-confirm", action="store_true",
                   help="search only: leave the confirmation's unit runs to tune and the other workers")
    p.add_argument("--no-racing", action="store_true",
                   help="if this worker plans the confirmation, train every run (as tune --no-racing)")
    _add_worker_args(p)

    p = command("screen", cmd.cmd_screen, "rank weight vectors post hoc and enqueue the top ones into a study", tf=True)
    _add_data_args(p)
    _add_study_args(p, study_default=None)
    p.add_argument("--samples", type=int_at_least(1), default=5000, help="weight vectors to score")
    p.add_argument("--top-k", type=int_at_least(1), default=5, help="how many to enqueue for confirmation by training")
    _add_seed_arg(p, "seed of the sampled weight vectors")


def _model_commands(command) -> None:
    """Bench and predict: models trained for comparison, or used."""
    p = command("bench", cmd.cmd_bench, "benchmark tuned weights against fixed schemes on a real corpus", tf=True)
    _add_data_args(p)
    _add_study_args(p, study_default=None, required=False,
                    study_help="take the tuned weights (and model config) from this study")
    p.add_argument("--config", default=None, help="model config JSON (default: the study's, else tune's default)")
    p.add_argument("--seeds", type=seed_list, default=[0, 1, 2], help="comma-separated seeds (at least 3 for a std)")
    p.add_argument("-o", "--out", default="docs/benchmarks.md", help="Markdown file whose benchmark section is replaced")
    p.add_argument("--json", default="benchmarks/bench.json", help="where to write the raw numbers")
    p.add_argument("--no-scaling", action="store_true", help="skip the 1x/2x/4x sample-corpus timing")
    p.add_argument("--transfer-by", choices=("journal", "volume", "none"), default="journal",
                   help="also train on all but one group and test on it, for every group (needs --data)")
    p.add_argument("--transfer-only", action="store_true", help="run only the transfer section")

    p = command("predict", cmd.cmd_predict, "label plain-text or .ann files with a saved model", tf=True)
    p.add_argument("files", nargs="+", help="plain-text or YEDDA .ann files, or folders (every .ann/.txt below); "
                                            ".ann files are also scored")
    _add_study_args(p, study_default=None, required=False, study_help="use the model this study recommends")
    p.add_argument("--model", default=None, help="a saved .keras model (from train --save-model)")
    p.add_argument("-o", "--out", default=None,
                   help="folder for <name>.pred.txt.ann, keeping the inputs' folders below their common one "
                        "(default: beside each input)")
    p.add_argument("--probs", action="store_true", help="also write per-line probabilities as CSV")
    p.add_argument("--sequence-rules", type=float, nargs="?", const=0.3, default=None, metavar="THRESHOLD",
                   help="apply the Nomenclature -> Description rules with this Description-probability threshold")
    p.add_argument("--json", default=None, help="write the results (and scores) as JSON here")
    p.add_argument("--use", choices=DEPLOYED_KINDS, default=None,
                   help="with --study: which model of the recommendation (default: refit, tune --refits' models "
                        "averaged, where tune made them, else ensemble: the confirmation's models averaged; "
                        "single: the search's model)")
    p.add_argument("--members", default=None, metavar="DIR",
                   help="with --study: the folder of the confirmation's models, where it moved")
    p.add_argument("--adapt-priors", choices=ADAPT_CHOICES, default=None,
                   help="re-weight probabilities to each file's (or folder's) class balance, estimated without "
                        "labels (EM, Saerens et al. 2002); off by default")


def _view_commands(command) -> None:
    """Export, dashboard and report: what a finished study is read as."""
    p = command("export", cmd.cmd_export, "write the recommended (or a chosen trial's) weights as JSON")
    _add_study_args(p, study_default=None)
    p.add_argument("-o", "--out", default=None, help="output file (default studies/<study>-best.json)")
    p.add_argument("--trial", type=int, default=None,
                   help="export this completed trial (e.g. another point of the Pareto front) instead")

    p = command("dashboard", cmd.cmd_dashboard, "serve optuna-dashboard with each study's decision above its page")
    _add_study_args(p, study_help="whose default SQLite storage to open, without --storage (default: default)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int_at_least(1), default=8080)

    p = command("report", cmd.cmd_report, "print the trials table and the recommendation; write report.html")
    _add_study_args(p, study_default=None)
    p.add_argument("-o", "--out", default=None, help="folder for report.html (default: studies/<study>/)")
    p.add_argument("--no-plots", action="store_true", help="print only; write no page")


def build_parser() -> argparse.ArgumentParser:
    """The ``weight-tuner`` argument parser.

    ``-o/--out`` names what a command writes (a file or, for sample and predict, a folder);
    ``--json`` adds a JSON copy of the results where there is one.
    """
    common = _output_options()
    parser = _Parser(prog="weight-tuner", description=__doc__.replace("``", ""), parents=[common])
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, func, help: str, tf: bool = False) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=func.__doc__, parents=[common])
        p.set_defaults(func=func, needs_tf=tf)
        return p

    _data_commands(command)
    _study_commands(command)
    _model_commands(command)
    _view_commands(command)
    return parser


def _write_failure(exc: BaseException, storage: str | None) -> str | None:
    """One line for a failure to write (a full disk, a study that cannot be written), found anywhere in the
    exception's chain (Optuna may raise its own error, or an assertion, while handling it); ``None`` for
    anything else."""
    import errno

    from optuna.exceptions import StorageInternalError

    chain, seen = [], exc
    while seen is not None and seen not in chain:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    for err in chain:
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            return f"cannot write {err.filename or 'a file'}: no space left on the device ({err.strerror})"
        if "database or disk is full" in str(err):
            where = f" {display_url(storage)}" if storage else ""
            return f"storage{where}: cannot write: the database or the disk under it is full"
    for err in chain:
        if isinstance(err, StorageInternalError):  # e.g. a study whose SQLite file or folder cannot be written
            cause = err.__cause__ or err
            return f"storage: cannot write ({type(cause).__name__}: {str(cause).strip().splitlines()[0]})"
    return None


def main(argv=None) -> int:
    """Entry point of the ``weight-tuner`` console script."""
    from . import logs

    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv  # the command line, recorded with benchmark results
    verbosity = getattr(args, "verbosity", 0)
    secrets = url_secrets(getattr(args, "storage", None) or os.environ.get(STORAGE_ENV))
    logs.configure(verbosity, secrets)
    args.guard = StopGuard()
    args.guard.install()
    try:
        if args.command == "tune":
            args.started = time.time()  # the start of a --timeout budget
            args.jobs = args.jobs or default_jobs()
            share_threads(args.jobs)  # before TensorFlow starts: its thread pools are sized once
        if args.needs_tf:
            logs.import_tensorflow(verbosity)
        return int(args.func(args) or 0)
    except WeightTunerError as exc:
        print(scrub(f"weight-tuner: error: {exc}", secrets), file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:
        message = _write_failure(exc, cmd._storage(args) if getattr(args, "study", None) else None)
        if message is None:
            raise
        print(scrub(f"weight-tuner: error: {message}", secrets), file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as exc:
        code = 143 if isinstance(exc, Terminated) else 130
        print(f"weight-tuner: interrupted ({'SIGTERM' if code == 143 else 'SIGINT'}); the running trial, if any, "
              "is marked FAIL and finished trials are kept. Run the same command again to resume.", file=sys.stderr)
        return code
    finally:
        args.guard.uninstall()


if __name__ == "__main__":
    sys.exit(main())
