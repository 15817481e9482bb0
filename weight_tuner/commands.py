"""The commands of ``weight-tuner``: one function each, taking the parsed arguments and returning an exit code.

Argument parsing and the exit codes of errors and signals are :mod:`.cli`'s; each command here reads
its inputs, runs one stage or a pipeline of stages, and prints or writes what it made.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from contextlib import nullcontext
from pathlib import Path

from .config import ModelConfig, load_config
from .errors import ConfigError, DataError, WeightTunerError
from .formats import VS_NONE, score
from .paths import (STORAGE_ENV, check_can_write, default_export_path, default_storage_url, display_url,
                    masked_command, write_json)
from .workers import RUN_ENV, LocalWorkers, stop_with_parent, worker_command_line


def _data_checks(args, storage: str | None = None, evaluation: dict | None = None):
    """What a job checks once the corpus is read and split, before features are computed or cached: the
    study's data is this run's (where the study exists), and the non-test chunks can be cut into the
    ``evaluation``'s folds."""
    def check(fingerprint: str, split: dict) -> None:
        from .folds import check_fold_count
        from .storage import check_stored_data

        if evaluation is not None:
            check_fold_count(split["train"] + split["val"], evaluation["folds"], evaluation["units_by"])
        if storage is not None:
            check_stored_data(storage, args.study, fingerprint)
    return check


def _check_members_first(args, storage: str) -> Path:
    """This process's members folder, checked before the corpus is read: where the study exists, it must be the
    folder the study keeps its confirmation models in (:func:`.artifacts.check_members_folder`)."""
    from .artifacts import check_members_folder, members_dir
    from .storage import stored_study_attrs

    folder = members_dir(storage, args.study, args.members)
    attrs = stored_study_attrs(storage, args.study)
    if attrs is not None:
        check_members_folder(attrs, args.study, folder)
    return folder


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
    payload = {"model_config": config.as_dict(), "val_stats": stats["val"], "test_stats": stats["test"],
               "history": history, "train_seconds": time.perf_counter() - t0,
               "mean_epoch_train_seconds": sum(epoch_seconds) / len(epoch_seconds),
               "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, **prepared.meta()}
    write_json(args.out, payload)
    print(f"wrote {args.out}")
    if args.save_model:
        from .bundles import save_bundle

        save_bundle(model, prepared.featurizer, config, args.save_model, prepared.label_map)
        print(f"saved model to {args.save_model}")
    return 0


def _storage(args) -> str:
    """``--storage``, else the environment's (how ``tune`` hands it to its workers: never on a command line)."""
    return args.storage or os.environ.get(STORAGE_ENV) or default_storage_url(args.study)


def _decide_and_deploy(args, study, prepared, evaluation: dict, storage: str, members: Path,
                       workers: LocalWorkers) -> bool:
    """``tune`` after its search: confirm and decide (printing the decision and the candidates), then the refits
    (trained by the local workers) beside the test check. ``False`` where the time budget ended first."""
    from .budget import refits_fit
    from .confirm.confirmation import confirm
    from .deploy.refits import Refits, no_refits
    from .deploy.testcheck import final_test_evaluation, search_models
    from .notes import candidates_table, decision_sentence, units_phrase
    from .storage import stored_recommendation

    t0, earlier = time.perf_counter(), stored_recommendation(study)  # earlier: its refits are kept if the same
    recommendation = confirm(study, prepared, evaluation, stop=args.guard, members=members, racing=not args.no_racing)
    if recommendation is None:  # the time budget ended first
        no_refits(study, workers.run_id)
        print(f"No decision: the time budget (--timeout {args.timeout}) ended before the confirmation could "
              "decide. Run the same command again to go on; nothing finished is redone.")
        return False
    print(f"\nRecommendation: {decision_sentence(recommendation)}")
    print(f"\nconfirmation ({time.perf_counter() - t0:.0f}s), paired {VS_NONE} over {recommendation.n_units} units "
          f"({units_phrase(recommendation)}):")
    print(candidates_table(recommendation))
    refit_step = nullcontext()
    if args.refits and refits_fit(study):
        refit_step = Refits(study, storage, args.refits, earlier, workers.run_id)
    elif args.refits:
        no_refits(study, workers.run_id)
        print(f"The refits are not trained: the time budget (--timeout {args.timeout}) has too little left for "
              f"{args.refits}; predict --study uses the confirmation's models. Run tune again to train them.")
    with refit_step as refits:  # the local workers train the refits while this process runs the test check
        search_models(study, prepared, storage)  # the test check's models, trained here where a worker ran them
        final_test_evaluation(study, prepared, storage, members)
        if refits is not None:
            refits.finish(prepared, stop=args.guard)
    return True


def cmd_tune(args) -> int:
    """Run (or resume) the study, confirm its top candidates against no weights, decide, then score the
    recommendation and no weights once on the test split."""
    from .budget import set_budget
    from .confirm.confirmation import confirmation_evaluation, withdraw_stale_recommendation
    from .folds import check_units
    from .notes import deployed_sentence, deployed_test
    from .search.run import open_study, run_trials
    from .search.stopping import set_rule, stop_line, trials_asked
    from .space import StudyConfig, parse_objectives
    from .storage import check_storage, finished_count, stored_recommendation

    study_config = StudyConfig.load(args.config)
    study_config.objectives = parse_objectives(args.objectives)
    study_config.set_evaluation(design=args.design, folds=args.folds, repeats=args.repeats, top=args.confirm_top,
                                units_by=args.units_by)
    args.n_trials, rule = trials_asked(args.trials, args.max_trials, study_config.evaluation)
    if study_config.evaluation["design"] == "cv" and len(study_config.objectives) > 1:
        raise WeightTunerError("--design cv needs a single objective (Optuna prunes single-objective studies only)")
    storage = _storage(args)
    check_storage(storage, connect=True)  # before the corpus is read or the feature cache written
    members = _check_members_first(args, storage)
    prepared = _prepare(args, _data_checks(args, storage, study_config.evaluation))
    check_units(prepared, study_config.evaluation)  # --folds against the data, before the study exists
    t0 = time.perf_counter()
    study, space, base_config = open_study(prepared, storage, args.study, study_config, seed=args.seed,
                                           heartbeat=args.heartbeat, members=members)
    # The budget counts from the command's start; every process of the study reads it there (None clears it).
    set_budget(study, args.timeout, 0 if args.no_confirm else args.refits, args.n_trials, started=args.started)
    set_rule(study, rule)  # None clears an earlier run's
    # The other jobs join once the study exists (created once, schemes enqueued once) and leave once no
    # trial, unit run or refit is left to take; the test check runs here while they train refits.
    workers = LocalWorkers(args.jobs, storage, worker_command_line(args, args.n_trials),
                           refits=bool(args.refits) and not args.no_confirm)
    args.guard.forward.append(workers.forward)
    with workers:
        run_trials(study, prepared, storage, args.n_trials, space, base_config, trial_timeout=args.trial_timeout,
                   stop=args.guard)
        print(f"study {args.study!r} in {display_url(storage)}: {finished_count(study)} finished trials "
              f"({time.perf_counter() - t0:.0f}s){stop_line(study)}")
        if args.no_confirm:
            if withdraw_stale_recommendation(study):
                print("the study's earlier recommendation predates these trials and was withdrawn.")
            print("confirmation skipped (--no-confirm): no recommendation is made. Run the same command without it "
                  "to confirm and decide.")
            return 0
        if not _decide_and_deploy(args, study, prepared, confirmation_evaluation(study, study_config.evaluation),
                                  storage, members, workers):
            return 0
    final = stored_recommendation(study)
    print(f"Deployed model (predict --study): {deployed_sentence(final)}")
    scored = deployed_test(final, study.user_attrs.get("test_stats")) if final else None
    if scored:  # on every run, a resumed one too: the score is stored with the study
        print(f"Deployed model's test important_f1: {score(scored['important_f1'])} ({scored['model']}; test split, "
              "scored once, after the decision)")
    print(f"Next: weight-tuner export --study {args.study} --storage {display_url(storage)}")
    return 0


def cmd_worker(args) -> int:
    """Join an existing study as one more worker."""
    from .confirm.confirmation import confirm, confirmation_evaluation
    from .search.run import join_study
    from .space import StudyConfig
    from .storage import check_storage, finished_count

    stop_with_parent()  # a local worker of tune: it stops when tune is gone
    check_storage(_storage(args), must_exist=True, connect=True)
    members = _check_members_first(args, _storage(args))
    prepared = _prepare(args, _data_checks(args, _storage(args)))
    study = join_study(prepared, _storage(args), args.study, args.trials, seed=args.seed,
                       trial_timeout=args.trial_timeout, heartbeat=args.heartbeat, stop=args.guard, members=members)
    print(f"worker: study {args.study!r} holds {finished_count(study)} finished trials")
    if args.no_confirm:
        return 0
    # The search is done: take the confirmation's unit runs alongside every other process of the study.
    confirm(study, prepared, confirmation_evaluation(study, StudyConfig().evaluation), stop=args.guard, wait=False,
            members=members, racing=not args.no_racing)
    if os.environ.get(RUN_ENV):  # a local worker of tune: its refits too
        from .deploy.refits import take_planned_refits

        take_planned_refits(study, prepared, os.environ[RUN_ENV], stop=args.guard)
    print(f"worker done: no unit run of study {args.study!r} is left to take; `weight-tuner tune` with the same "
          "arguments decides once all are finished")
    return 0


def cmd_predict(args) -> int:
    """Label text or .ann files with a saved model (a study's best, or --model)."""
    from .logs import progress_enabled
    from .metrics import format_stats_table
    from .predict import collect_inputs, output_paths, predict_files

    def per_label(counts: dict[str, int]) -> str:
        return ", ".join(f"{c} {n}" for c, n in counts.items())

    if bool(args.model) == bool(args.study):
        raise WeightTunerError("predict: give exactly one of --model PATH or --study NAME")
    # Every input, and where its output goes, is checked before the model loads or anything is written.
    targets = output_paths(collect_inputs(args.files), args.out)
    for target in [*targets.values(), *([args.json] if args.json else [])]:
        check_can_write(target)
    if args.model and (args.use or args.members):
        raise WeightTunerError("predict: --use and --members choose a study's model; they need --study, not --model")
    multipliers, prior, calibration = None, None, None
    if args.model:
        model_path = args.model
    else:
        from .deploy.loaded import recommended_model

        deployed = recommended_model(_storage(args), args.study, use=args.use, members=args.members)
        model_path, multipliers, prior = deployed.bundles, deployed.multipliers, deployed.train_prior
        calibration = deployed.calibration
        print(f"model: {deployed.description}")
    results = predict_files(model_path, args.files, out_dir=args.out, probs_csv=args.probs,
                            sequence_threshold=args.sequence_rules, multipliers=multipliers,
                            progress=progress_enabled(), adapt=args.adapt_priors, train_prior=prior,
                            calibration=calibration, targets=targets)
    for path, entry in results["files"].items():
        if entry.get("skipped"):
            print(f"{path}: skipped ({entry['skipped']})")
            continue
        print(f"{path}: {entry['lines']} lines ({per_label(entry['labels'])}) -> {entry['output']}" +
              (f" (probabilities: {entry['probs_csv']})" if "probs_csv" in entry else ""))
        if "stats" in entry:
            print(format_stats_table({"file": entry["stats"]}))
    if "stats" in results and len(results["files"]) > 1:
        print(format_stats_table({"all": results["stats"]}))
    if len(results["files"]) > 1:
        print(f"all {len(results['files'])} files: {results['throughput']['lines']} lines "
              f"({per_label(results['labels'])})")
    if args.json:
        write_json(args.json, results)
    return 0


def cmd_bench(args) -> int:
    """Benchmark tuned weights against fixed schemes, threshold tuning and a linear model; then transfer
    across journals (train on one, test on another)."""
    from .bench import run_bench, run_transfer
    from .bench_report import TRANSFER_END, TRANSFER_START, render_transfer, replace_section, write_outputs
    from .space import QUICK_MODEL
    from .storage import stored_recommendation, tuned_study

    if args.data and not Path(args.data).is_dir():
        print(f"weight-tuner bench: corpus {args.data} not found; skipping the benchmark")
        return 0
    study = tuned_study(_storage(args), args.study) if args.study else None
    if args.config:
        base = load_config(args.config)
    elif study is not None:
        base = ModelConfig.from_dict(study.user_attrs["model_config"])
    else:
        base = ModelConfig.from_dict(QUICK_MODEL)
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
    from .search.screen import screen_into_study

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

    report(_storage(args), args.study, plots=not args.no_plots, out_dir=args.out, wide=getattr(args, "verbosity", 0) > 0)
    return 0


def cmd_dashboard(args) -> int:
    """Serve optuna-dashboard on the storage, with each study's decision above its page."""
    from .dashboard import serve

    serve(_storage(args), args.host, args.port)
    return 0
