"""Command line: ``weight-tuner <command>``; every Makefile target is a thin wrapper over it."""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

from .config import load_config
from .corpus import MIN_SPLIT_DOCS, SPLIT_BY
from .errors import ConfigError, DataError, WeightTunerError
from .formats import VS_NONE
from .paths import (DEFAULT_CACHE_DIR, STORAGE_ENV, check_can_write, default_export_path, default_storage_url, display_url,
                    masked_command, write_json)
from .posthoc import ADAPT_CHOICES
from .sample import SAMPLE_DOCS
from .signals import StopGuard, Terminated
from .study.members import DEFAULT_REFITS, DEPLOYED_KINDS
from .study.space import DEFAULT_EVALUATION, DESIGNS
from .workers import JOBS_ENV, LocalWorkers, default_jobs, share_threads

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error on one line (``weight-tuner tune: error: ...``) and exit 2."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


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


def _data_checks(args, storage: str | None = None, folds: int | None = None):
    """What a job checks once the corpus is read and split, before features are computed or cached: the
    study's data is this run's (where the study exists), and the non-test chunks can be cut into ``folds``."""
    def check(fingerprint: str, split: dict) -> None:
        from .study.storage import check_stored_data
        from .study.units import check_fold_count

        if folds is not None:
            check_fold_count(len(split["train"]) + len(split["val"]), folds)  # the non-test chunks
        if storage is not None:
            check_stored_data(storage, args.study, fingerprint)
    return check


def _prepare(args, before_features=None):
    from .train import SAMPLE_DOCS, prepare

    if args.data and args.sample_rare_nomenclature != 1:
        raise WeightTunerError("--sample-rare-nomenclature applies to the sample corpus only, not to --data")
    label_map = None
    if args.label_map:
        from .paths import parse_json

        label_map = parse_json(args.label_map, "--label-map")
        if not isinstance(label_map, dict):
            raise ConfigError("--label-map: expected a JSON object of raw label -> class")
    return prepare(args.data, split_seed=args.split_seed, sample_docs=args.sample_docs or SAMPLE_DOCS,
                   cache_dir=args.cache_dir or None, max_chunk_lines=args.max_chunk_lines, label_map=label_map,
                   sample_rare_nomenclature=args.sample_rare_nomenclature, split_by=args.split_by,
                   test_groups=args.test_group, before_features=before_features)


def cmd_corpus(args) -> int:
    """Read a corpus and print per-class line counts and reader warnings."""
    from . import corpus
    from .train import SAMPLE_DOCS, load_documents

    docs, report, _ = load_documents(args.data, args.sample_docs or SAMPLE_DOCS)
    for w in report.warnings:
        print(f"warning: {w}", file=sys.stderr)
    print("\n".join(corpus.report_lines(docs, report)))
    return 0


def cmd_sample(args) -> int:
    """Write the sample corpus as .ann files."""
    from .sample import write_corpus

    paths = write_corpus(args.out, n_docs=args.docs, seed=args.seed)
    print(f"wrote {len(paths)} documents under {args.out}")
    return 0


def cmd_train(args) -> int:
    """Train on the training split; report validation and test stats."""
    from .metrics import format_stats_table
    from .train import evaluate, train_model

    config = load_config(args.config, args.weights)
    prepared = _prepare(args)
    t0 = time.perf_counter()
    model, history = train_model(prepared, config)
    stats = {"val": evaluate(model, prepared.splits["val"], config),
             "test": evaluate(model, prepared.splits["test"], config)}
    print(format_stats_table(stats))
    epoch_seconds = [h["train_seconds"] for h in history]
    payload = {"model_config": config, "val_stats": stats["val"], "test_stats": stats["test"],
               "history": history, "train_seconds": time.perf_counter() - t0,
               "mean_epoch_train_seconds": sum(epoch_seconds) / len(epoch_seconds),
               "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, **prepared.meta()}
    write_json(args.out, payload)
    print(f"wrote {args.out}")
    if args.save_model:
        from .train import save_bundle

        save_bundle(model, prepared.featurizer, config, args.save_model, prepared.label_map)
        print(f"saved model to {args.save_model}")
    return 0


def _add_study_args(p: argparse.ArgumentParser, study_default: str | None = "default") -> None:
    p.add_argument("--study", default=study_default, required=study_default is None, help="Optuna study name")
    p.add_argument("--storage", default=None,
                   help=f"Optuna RDB storage URL (default ${STORAGE_ENV} if set, else sqlite:///studies/<study>.db; "
                        "postgresql://... scales out). A URL with a password is best given through the environment")


def _add_worker_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=0, help="sampler seed")
    p.add_argument("--trial-timeout", type=positive_float, default=None,
                   help="fail a trial that runs longer than this many seconds (checked after each epoch)")
    p.add_argument("--heartbeat", type=int_at_least(1), default=10,
                   help="heartbeat interval in seconds; a trial of a killed worker is failed and retried "
                        "after three missed beats")
    p.add_argument("--members", default=None, metavar="DIR",
                   help="where the confirmation's models are kept (an Optuna artifact store; default "
                        "studies/<study>/members). Workers on other machines need one shared folder")


def _storage(args) -> str:
    """``--storage``, else the environment's (how ``tune`` hands it to its workers: never on a command line)."""
    return args.storage or os.environ.get(STORAGE_ENV) or default_storage_url(args.study)


# The data options a local worker repeats, so that it prepares the same data (from the feature cache).
_DATA_OPTIONS = ("data", "sample_docs", "sample_rare_nomenclature", "split_seed", "split_by", "cache_dir",
                 "max_chunk_lines", "label_map")


def _worker_args(args) -> list[str]:
    """The ``worker`` command line of ``tune``'s local workers (after ``worker``), without the storage URL."""
    out = ["--study", args.study, "--trials", str(args.trials), "--seed", str(args.seed),
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


def cmd_tune(args) -> int:
    """Run (or resume) the study, confirm its top candidates against no weights, decide, then score the
    recommendation and no weights once on the test split."""
    from .study import (StudyConfig, check_storage, confirm, confirmation_evaluation, final_test_evaluation,
                        finished_count, open_study, parse_objectives, run_trials, stored_recommendation)
    from .study.members import members_dir, refit
    from .study.notes import candidates_table, decision_sentence, deployed_sentence
    from .study.recommend import withdraw_stale_recommendation
    from .study.units import check_units

    study_config = StudyConfig.load(args.config)
    study_config.objectives = parse_objectives(args.objectives)
    study_config.set_evaluation(design=args.design, folds=args.folds, repeats=args.repeats, top=args.confirm_top)
    if study_config.evaluation["design"] == "cv" and len(study_config.objectives) > 1:
        raise WeightTunerError("--design cv needs a single objective (Optuna prunes single-objective studies only)")
    storage = _storage(args)
    check_storage(storage, connect=True)  # before the corpus is read or the feature cache written
    prepared = _prepare(args, _data_checks(args, storage, study_config.evaluation["folds"]))
    check_units(prepared, study_config.evaluation)  # --folds against the data, before the study exists
    t0 = time.perf_counter()
    study, space, base_config = open_study(prepared, storage, args.study, study_config, seed=args.seed,
                                           heartbeat=args.heartbeat)
    # The other jobs join once the study exists (created once, schemes enqueued once) and leave once no
    # trial or unit run is left to take: the test check and the refits below run here alone.
    workers = LocalWorkers(args.jobs, storage, _worker_args(args))
    args.guard.forward.append(workers.forward)
    with workers:
        run_trials(study, prepared, storage, args.trials, space, base_config, args.trial_timeout, stop=args.guard)
        search_s = time.perf_counter() - t0
        print(f"study {args.study!r} in {display_url(storage)}: {finished_count(study)} finished trials "
              f"({search_s:.0f}s)")
        if args.no_confirm:
            if withdraw_stale_recommendation(study):
                print("the study's earlier recommendation predates these trials and was withdrawn.")
            print("confirmation skipped (--no-confirm): no recommendation is made. Run the same command without it "
                  "to confirm and decide.")
            return 0
        evaluation = confirmation_evaluation(study, study_config.evaluation)
        members = members_dir(storage, args.study, args.members)
        earlier = stored_recommendation(study)  # its refits are kept if the configuration is the same
        recommendation = confirm(study, prepared, evaluation, stop=args.guard, members=members,
                                 racing=not args.no_racing)
        confirm_s = time.perf_counter() - t0 - search_s
    print(f"\nRecommendation: {decision_sentence(recommendation)}")
    print(f"\nconfirmation ({confirm_s:.0f}s), paired {VS_NONE} over {recommendation['n_units']} units:")
    print(candidates_table(recommendation))
    final_test_evaluation(study, prepared, storage, members)
    if args.refits:
        refit(study, prepared, storage, args.refits, earlier)
    print(f"Deployed model (predict --study): {deployed_sentence(study.user_attrs['recommendation'])}")
    print(f"Next: weight-tuner export --study {args.study} --storage {display_url(storage)}")
    return 0


def cmd_worker(args) -> int:
    """Join an existing study as one more worker."""
    from .study import StudyConfig, check_storage, confirm, confirmation_evaluation, finished_count, join_study

    check_storage(_storage(args), must_exist=True, connect=True)
    prepared = _prepare(args, _data_checks(args, _storage(args)))
    study = join_study(prepared, _storage(args), args.study, args.trials, seed=args.seed,
                       trial_timeout=args.trial_timeout, heartbeat=args.heartbeat, stop=args.guard)
    print(f"worker: study {args.study!r} holds {finished_count(study)} finished trials")
    if args.no_confirm:
        return 0
    # The search is done: take the confirmation's unit runs alongside every other process of the study.
    from .study.members import members_dir

    confirm(study, prepared, confirmation_evaluation(study, StudyConfig().evaluation), stop=args.guard, wait=False,
            members=members_dir(_storage(args), args.study, args.members), racing=not args.no_racing)
    print(f"worker done: no unit run of study {args.study!r} is left to take; `weight-tuner tune` with the same "
          "arguments decides once all are finished")
    return 0


def cmd_predict(args) -> int:
    """Label text or .ann files with a saved model (a study's best, or --model)."""
    from .logs import progress_enabled
    from .metrics import format_stats_table
    from .predict import collect_inputs, output_paths, predict_files

    if bool(args.model) == bool(args.study):
        raise WeightTunerError("predict: give exactly one of --model PATH or --study NAME")
    # Every input, and where its output goes, is checked before the model loads or anything is written.
    for target in [*output_paths(collect_inputs(args.files), args.out).values(), *([args.json] if args.json else [])]:
        check_can_write(target)
    if args.model and (args.use or args.members):
        raise WeightTunerError("predict: --use and --members choose a study's model; they need --study, not --model")
    multipliers, prior, calibration = None, None, None
    if args.model:
        model_path = args.model
    else:
        from .study import recommended_model

        deployed = recommended_model(_storage(args), args.study, use=args.use, members=args.members)
        model_path, multipliers, prior = deployed.bundles, deployed.multipliers, deployed.train_prior
        calibration = deployed.calibration
        print(f"model: {deployed.description}")
    results = predict_files(model_path, args.files, out_dir=args.out, probs_csv=args.probs,
                            sequence_threshold=args.sequence_rules, multipliers=multipliers,
                            progress=progress_enabled(), adapt=args.adapt_priors, train_prior=prior,
                            calibration=calibration)
    for path, entry in results["files"].items():
        if entry.get("skipped"):
            print(f"{path}: skipped ({entry['skipped']})")
            continue
        print(f"{path}: {entry['lines']} lines -> {entry['output']}" +
              (f" (probabilities: {entry['probs_csv']})" if "probs_csv" in entry else ""))
        if "stats" in entry:
            print(format_stats_table({"file": entry["stats"]}))
    if "stats" in results and len(results["files"]) > 1:
        print(format_stats_table({"all": results["stats"]}))
    if args.json:
        write_json(args.json, results)
    return 0


def cmd_bench(args) -> int:
    """Benchmark tuned weights against fixed schemes, threshold tuning and a linear model; then transfer
    across journals (train on one, test on another)."""
    from .bench import (TRANSFER_END, TRANSFER_START, render_transfer, replace_section, run_bench, run_transfer,
                        write_outputs)
    from .study import QUICK_MODEL, stored_recommendation, tuned_study

    if args.data and not Path(args.data).is_dir():
        print(f"weight-tuner bench: corpus {args.data} not found; skipping the benchmark")
        return 0
    study = tuned_study(_storage(args), args.study) if args.study else None
    if args.config:
        base = load_config(args.config)
    elif study is not None:
        base = study.user_attrs["model_config"]
    else:
        base = dict(QUICK_MODEL)
    command = "weight-tuner " + masked_command(args.argv)  # written into the Markdown: no password
    if not args.transfer_only:
        prepared = _prepare(args)
        result = run_bench(prepared, base, seeds=args.seeds, study=study, scaling=not args.no_scaling)
        write_outputs(result, args.out, args.json, command)
        print(f"wrote {args.out} and {args.json}")
    if args.transfer_by == "none" or not args.data:
        if args.transfer_only:
            raise WeightTunerError("--transfer-only needs --data with journal folders and --transfer-by journal|volume")
        return 0
    rec = stored_recommendation(study) if study is not None else None
    try:
        transfer = run_transfer(args.data, base, seeds=args.seeds, by=args.transfer_by, recommendation=rec,
                                cache_dir=args.cache_dir or None, split_seed=args.split_seed)
    except DataError as exc:  # a flat folder: no journals to transfer between
        if args.transfer_only:
            raise
        print(f"transfer benchmark skipped: {exc}")
        return 0
    if transfer is None:
        print(f"transfer benchmark skipped: {args.data} holds fewer than two {args.transfer_by}s")
        return 0
    json_path = Path(args.json).with_name(Path(args.json).stem + "_transfer.json")
    replace_section(args.out, render_transfer(transfer, command), TRANSFER_START, TRANSFER_END)
    write_json(json_path, transfer)
    print(f"wrote the transfer section of {args.out} and {json_path}")
    return 0


def cmd_screen(args) -> int:
    """Rank weight vectors post hoc on the unweighted model; enqueue the best into the study."""
    from .study.screen import screen_into_study

    prepared = _prepare(args)
    picked = screen_into_study(prepared, _storage(args), args.study, samples=args.samples, top_k=args.top_k,
                               seed=args.seed)
    print(f"enqueued {len(picked)} trials; run `weight-tuner tune` (or a worker) with a larger --trials to train them")
    return 0


def cmd_export(args) -> int:
    """Write the best weights of a study as JSON."""
    from .export import export_study

    out = args.out or default_export_path(args.study)
    payload = export_study(_storage(args), args.study, out, args.trial)
    print(json.dumps({"class_weights": payload["class_weights"]}))
    rec = payload["recommendation"]
    what = (f"recommendation: {rec['decision']}" if rec else
            f"trial {payload['trial_number']}, scheme {payload['scheme']}; no recommendation"
            + ("" if args.trial is not None else " yet (the confirmation has not run)"))
    print(f"wrote {out} ({what})")
    return 0


def cmd_report(args) -> int:
    """Print the trials table (best first) and the recommendation; write the study's HTML page."""
    from .report import report

    report(_storage(args), args.study, plots=not args.no_plots, out_dir=args.out)
    return 0


def cmd_dashboard(args) -> int:
    """Serve optuna-dashboard on the storage, with each study's decision above its page."""
    from .dashboard import serve

    serve(_storage(args), args.host, args.port)
    return 0


def _output_options() -> argparse.ArgumentParser:
    """``-v/-q``, accepted by every command (before or after its name)."""
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_mutually_exclusive_group()
    group.add_argument("-v", "--verbose", action="store_const", const=1, dest="verbosity", default=argparse.SUPPRESS,
                       help="more output: details, Optuna's log and TensorFlow's start-up log")
    group.add_argument("-q", "--quiet", action="store_const", const=-1, dest="verbosity", default=argparse.SUPPRESS,
                       help="warnings and results only: no progress lines or bars")
    return common


def build_parser() -> argparse.ArgumentParser:
    """The ``weight-tuner`` argument parser.

    ``-o/--out`` names what a command writes (a file or, for sample and predict, a folder);
    ``--json`` adds a JSON copy of the results where there is one.
    """
    common = _output_options()
    parser = _Parser(prog="weight-tuner", description=__doc__, parents=[common])
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, func, help: str, tf: bool = False) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=func.__doc__, parents=[common])
        p.set_defaults(func=func, needs_tf=tf)
        return p

    p = command("corpus", cmd_corpus, "read a corpus and print per-class line counts")
    p.add_argument("--data", default=None, help="directory of YEDDA .ann files (default: the sample corpus)")
    p.add_argument("--sample-docs", type=int_at_least(1), default=None,
                   help=f"size of the sample corpus in documents (default {SAMPLE_DOCS}); any size can be read, "
                        f"a study needs at least {MIN_SPLIT_DOCS}")

    p = command("sample", cmd_sample, "write the embedded sample corpus as .ann files")
    p.add_argument("-o", "--out", required=True, help="folder to write the .ann files into")
    p.add_argument("--docs", type=int_at_least(1), default=60)
    p.add_argument("--seed", type=int, default=0)

    p = command("train", cmd_train, "train one model and report validation and test stats", tf=True)
    _add_data_args(p)
    p.add_argument("--config", default=None, help="JSON model config (the guide's keys)")
    p.add_argument("--weights", default=None, help="class weights: inline JSON or a JSON file (an export works)")
    p.add_argument("-o", "--out", default="runs/train_stats.json", help="where to write the stats as JSON")
    p.add_argument("--save-model", default=None, help="save the trained model (.keras) here")

    p = command("tune", cmd_tune, "run or resume the Optuna study over class weights", tf=True)
    _add_data_args(p)
    _add_study_args(p)
    p.add_argument("--trials", type=int_at_least(1), default=16,
                   help="finished (complete or pruned) trials the study should hold in total")
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
    p.add_argument("--confirm-top", type=int_at_least(1), default=None,
                   help=f"distinct weight vectors confirmed against no weights (default {DEFAULT_EVALUATION['top']})")
    p.add_argument("--no-confirm", action="store_true", help="run the search only; make no recommendation")
    p.add_argument("--no-racing", action="store_true",
                   help="train every confirmation run, also those of a candidate that can no longer win (a new "
                        "confirmation plan only; the decision is the same either way)")
    p.add_argument("--refits", type=int_at_least(0), default=DEFAULT_REFITS, metavar="N",
                   help="after the decision, train the recommended configuration N times on every non-test line "
                        f"(seeds seed, seed + 10, ...): the default model of predict --study (default "
                        f"{DEFAULT_REFITS}; 0: none, predict --study then uses the confirmation's models)")

    p = command("worker", cmd_worker, "join an existing study (created by tune) as one more worker", tf=True)
    _add_data_args(p)
    _add_study_args(p, study_default=None)
    p.add_argument("--trials", type=int_at_least(1), required=True,
                   help="finished trials the study should hold in total")
    p.add_argument("--no-confirm", action="store_true",
                   help="search only: leave the confirmation's unit runs to tune and the other workers")
    p.add_argument("--no-racing", action="store_true",
                   help="if this worker plans the confirmation, train every run (as tune --no-racing)")
    _add_worker_args(p)

    p = command("bench", cmd_bench, "benchmark tuned weights against fixed schemes on a real corpus", tf=True)
    _add_data_args(p)
    p.add_argument("--study", default=None, help="take the tuned weights (and model config) from this study")
    p.add_argument("--storage", default=None)
    p.add_argument("--config", default=None, help="model config JSON (default: the study's, else tune's default)")
    p.add_argument("--seeds", type=seed_list, default=[0, 1, 2], help="comma-separated seeds (at least 3 for a std)")
    p.add_argument("-o", "--out", default="docs/benchmarks.md", help="Markdown file whose benchmark section is replaced")
    p.add_argument("--json", default="docs/bench.json", help="where to write the raw numbers")
    p.add_argument("--no-scaling", action="store_true", help="skip the 1x/2x/4x sample-corpus timing")
    p.add_argument("--transfer-by", choices=("journal", "volume", "none"), default="journal",
                   help="also train on all but one group and test on it, for every group (needs --data)")
    p.add_argument("--transfer-only", action="store_true", help="run only the transfer section")

    p = command("screen", cmd_screen, "rank weight vectors post hoc and enqueue the top ones into a study", tf=True)
    _add_data_args(p)
    _add_study_args(p, study_default=None)
    p.add_argument("--samples", type=int_at_least(1), default=5000, help="weight vectors to score")
    p.add_argument("--top-k", type=int_at_least(1), default=5, help="how many to enqueue for confirmation by training")
    p.add_argument("--seed", type=int, default=0)

    p = command("predict", cmd_predict, "label plain-text or .ann files with a saved model", tf=True)
    p.add_argument("files", nargs="+", help="plain-text or YEDDA .ann files, or folders (every .ann/.txt below); "
                                            ".ann files are also scored")
    p.add_argument("--study", default=None, help="use the model this study recommends")
    p.add_argument("--storage", default=None)
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

    p = command("export", cmd_export, "write the recommended (or a chosen trial's) weights as JSON")
    _add_study_args(p, study_default=None)
    p.add_argument("-o", "--out", default=None, help="output file (default studies/<study>-best.json)")
    p.add_argument("--trial", type=int, default=None,
                   help="export this completed trial (e.g. another point of the Pareto front) instead")

    p = command("dashboard", cmd_dashboard, "serve optuna-dashboard with each study's decision above its page")
    p.add_argument("--storage", default=None, help="the study's storage URL (default: that of --study)")
    p.add_argument("--study", default="default", help="whose default SQLite storage to open (default: default)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int_at_least(1), default=8080)

    p = command("report", cmd_report, "print the trials table and the recommendation; write report.html")
    _add_study_args(p, study_default=None)
    p.add_argument("-o", "--out", default=None, help="folder for report.html (default: studies/<study>/)")
    p.add_argument("--no-plots", action="store_true", help="print only; write no page")
    return parser


def main(argv=None) -> int:
    """Entry point of the ``weight-tuner`` console script."""
    from . import logs

    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv  # the command line, recorded with benchmark results
    verbosity = getattr(args, "verbosity", 0)
    logs.configure(verbosity)
    args.guard = StopGuard()
    args.guard.install()
    try:
        if args.command == "tune":
            args.jobs = args.jobs or default_jobs()
            share_threads(args.jobs)  # before TensorFlow starts: its thread pools are sized once
        if args.needs_tf:
            logs.import_tensorflow(verbosity)
        return int(args.func(args) or 0)
    except WeightTunerError as exc:
        print(f"weight-tuner: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:
        from optuna.exceptions import StorageInternalError

        if not isinstance(exc, StorageInternalError):
            raise
        # e.g. a study whose SQLite file or folder cannot be written: one line, not Optuna's traceback
        cause = exc.__cause__ or exc
        print(f"weight-tuner: error: storage: cannot write ({type(cause).__name__}: "
              f"{str(cause).strip().splitlines()[0]})", file=sys.stderr)
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
