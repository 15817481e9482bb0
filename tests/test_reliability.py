"""Faults as a user meets them: kill -9, Ctrl-C, many workers, NaN losses, timeouts, bad input."""

import hashlib
import os
import signal
import sqlite3
import time

import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState

from weight_tuner.cli import main
from weight_tuner.errors import StudyError
from weight_tuner.retries import create_study, requeue
from weight_tuner.search.run import tune
from weight_tuner.space import StudyConfig

from support import (PG_URL, cli, exportable_study, one_line_error, pg_server_answers, running_mid_epoch, study_toml,
                     trials, wait_for)


def test_kill_9_mid_trial_then_rerun_retries_it(tmp_path, cache_dir):
    url = f"sqlite:///{tmp_path}/k.db"
    # 4 schemes queued, 3 trials: the retry takes the killed trial's place in the queue, so the rerun runs the
    # three schemes queued first, as the run that was not killed does (queued last, it would never run).
    args = ["tune", "--storage", url, "--study", "k", "--trials", "3", "--config", str(study_toml(tmp_path, epochs=8)),
            "--heartbeat", "1", "--no-confirm"]
    proc = cli(args, cache_dir)
    snapshot = []

    def running_after_one():
        """One read: a trial running in its first half (so it cannot end before the kill), after one completed.
        The trial killed is the one this read saw running, not a later read's."""
        snapshot[:] = trials(url, "k")
        done = sum(t.state == TrialState.COMPLETE for t in snapshot)
        return done >= 1 and any(t.state == TrialState.RUNNING and 1 <= len(t.intermediate_values) <= 4
                                 for t in snapshot)

    wait_for(running_after_one, proc, what="a running trial after one completed")
    before = snapshot
    complete_before = sum(t.state == TrialState.COMPLETE for t in before)
    killed = [t for t in before if t.state == TrialState.RUNNING][0]
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    with sqlalchemy.create_engine(url).begin() as connection:  # its last beat long ago: stale at once, no waiting
        connection.execute(sqlalchemy.text("UPDATE trial_heartbeats SET heartbeat = '2000-01-01 00:00:00'"))
    rerun = cli(args, cache_dir)
    out, err = rerun.communicate(timeout=400)
    assert rerun.returncode == 0, err[-8000:]
    after = trials(url, "k")
    by_number = {t.number: t for t in after}
    assert by_number[killed.number].state == TrialState.FAIL
    retries = [t for t in after if t.system_attrs.get("failed_trial") == killed.number]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
    assert retries[0].params == killed.params
    assert retries[0].user_attrs["scheme"] == killed.user_attrs["scheme"]
    assert sum(t.state == TrialState.COMPLETE for t in after) >= complete_before
    for t in before:  # completed trials are untouched
        if t.state == TrialState.COMPLETE:
            assert by_number[t.number].value == t.value and by_number[t.number].state == TrialState.COMPLETE
    assert sum(t.state == TrialState.COMPLETE for t in after) == 3
    queued = [t.user_attrs["scheme"] for t in sorted(before, key=lambda t: t.number)]
    assert sorted(t.user_attrs["scheme"] for t in after if t.state == TrialState.COMPLETE) == sorted(queued[:3])


def _scheme_trial(study, scheme, state=TrialState.FAIL):
    """Take the next waiting trial, check it is ``scheme``'s, and end it in ``state``."""
    trial = study.ask()
    assert trial.user_attrs["scheme"] == scheme
    trial.suggest_float("x", 0.0, 10.0)
    return study.tell(trial, 1.0 if state == TrialState.COMPLETE else None, state=state)


def test_a_retried_trial_runs_before_the_trials_queued_after_the_one_it_retries():
    """Ours (``requeue``, a retry of a retry too) and Optuna's heartbeat retry both take the failed trial's place."""
    study = create_study("q", optuna.storages.InMemoryStorage())
    for i in range(4):
        study.enqueue_trial({"x": float(i)}, user_attrs={"scheme": f"s{i}"})
    _scheme_trial(study, "s0", TrialState.COMPLETE)
    requeue(study, _scheme_trial(study, "s1"))  # interrupted: queued again as trial 4
    requeue(study, _scheme_trial(study, "s1"))  # interrupted again: trial 5, still in s1's place
    optuna.storages.RetryHeartbeatStaleTrialCallback()(study, _scheme_trial(study, "s1"))  # its process died
    _scheme_trial(study, "s1", TrialState.COMPLETE)
    _scheme_trial(study, "s2", TrialState.COMPLETE)
    assert [t.user_attrs["scheme"] for t in study.trials if t.state == TrialState.WAITING] == ["s3"]
    requeue(study, study.ask())  # stopped before it suggested x: it gives back the x it was queued with
    retry = study.ask()
    assert retry.user_attrs["scheme"] == "s3" and retry.suggest_float("x", 0.0, 10.0) == 3.0


def _ignore_sigint():
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.parametrize("signum,inherited,code", [(signal.SIGINT, "default", 130), (signal.SIGINT, "ignored", 130),
                                                    (signal.SIGTERM, "default", 143)])
def test_sigint_or_sigterm_fails_the_trial_requeues_it_and_exits(tmp_path, cache_dir, signum, inherited, code):
    # "ignored": a background job of a non-interactive shell starts with SIGINT ignored
    url = f"sqlite:///{tmp_path}/i.db"
    proc = cli(["tune", "--storage", url, "--study", "i", "--trials", "2", "--config", str(study_toml(tmp_path))],
               cache_dir, preexec_fn=_ignore_sigint if inherited == "ignored" else None)
    wait_for(running_mid_epoch(url, "i"), proc, what="a running trial")
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err[-8000:]
    assert "Run the same command again to resume" in err
    ts = trials(url, "i")
    failed = [t for t in ts if t.state == TrialState.FAIL]
    assert len(failed) == 1 and "interrupted" in failed[0].user_attrs["fail_reason"]
    assert not [t for t in ts if t.state == TrialState.RUNNING]
    # its parameters wait in the queue for the next run
    assert any(t.state == TrialState.WAITING and t.user_attrs.get("retry_of") == failed[0].number for t in ts)
    con = sqlite3.connect(tmp_path / "i.db")
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    con.close()


def test_two_sigints_leave_no_running_trial_and_end_the_process(tmp_path, cache_dir):
    url = f"sqlite:///{tmp_path}/d.db"
    proc = cli(["tune", "--storage", url, "--study", "d", "--trials", "2", "--config", str(study_toml(tmp_path))],
               cache_dir)
    wait_for(running_mid_epoch(url, "d"), proc, what="a running trial")
    proc.send_signal(signal.SIGINT)
    time.sleep(0.02)  # a user pressing Ctrl-C twice
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)  # gone within 30 s, heartbeat thread and all
    assert proc.returncode == 130, err[-8000:]
    deadline = time.time() + 30  # the trial is failed at once, or by a helper once the process is gone
    while [t for t in trials(url, "d") if t.state == TrialState.RUNNING] and time.time() < deadline:
        time.sleep(0.5)
    ts = trials(url, "d")
    assert not [t for t in ts if t.state == TrialState.RUNNING], err[-8000:]
    failed = [t for t in ts if t.state == TrialState.FAIL]
    assert len(failed) == 1
    retries = [t for t in ts if t.state == TrialState.WAITING and t.user_attrs.get("retry_of") == failed[0].number]
    assert len(retries) == 1  # re-queued once, whichever signal did it


@pytest.mark.skipif(not pg_server_answers(), reason=f"no PostgreSQL server listens at {PG_URL}")
def test_the_readme_postgresql_url_form_connects():
    # A missing driver (SQLAlchemy 2.1 maps postgresql:// to psycopg 3) must fail here, not skip.
    from weight_tuner.storage import check_storage

    check_storage(PG_URL, connect=True)


def test_nan_loss_fails_the_trial_and_the_study_goes_on(prepared, tmp_path):
    import weight_tuner.train as train_mod
    from weight_tuner.errors import NonFiniteLossError

    calls = {"n": 0}
    real = train_mod.train_model

    def sometimes_nan(prepared, config, epoch_hook=None, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise NonFiniteLossError("training loss became nan at epoch 1")
        return real(prepared, config, epoch_hook, **kwargs)

    cfg = StudyConfig(model={"hidden_size": 4, "num_layers": 1, "epochs": 1, "batch_size": 32, "verbosity": 0},
                      schemes=["unweighted", "balanced"])
    train_mod.train_model = sometimes_nan
    try:
        study = tune(prepared, f"sqlite:///{tmp_path}/n.db", "n", 2, cfg)
    finally:
        train_mod.train_model = real
    states = [t.state for t in study.trials]
    assert states[0] == TrialState.FAIL and "nan" in study.trials[0].user_attrs["fail_reason"]
    assert states.count(TrialState.COMPLETE) == 2


def test_real_nan_loss_is_detected(prepared):
    import dataclasses

    import numpy as np

    from weight_tuner.config import ModelConfig
    from weight_tuner.errors import NonFiniteLossError
    from weight_tuner.train import train_model

    # Huge weights no longer overflow (they are normalised); a NaN feature (a corrupt cache, say) still poisons
    # the loss, and training must stop on it.
    train = prepared.splits["train"]
    data = np.array(train.rows.data)
    data[int(train.rows.indptr[train.index[3]])] = np.nan
    rows = dataclasses.replace(train.rows, data=data)
    poisoned = dataclasses.replace(prepared, splits=dict(prepared.splits, train=dataclasses.replace(train, rows=rows)))
    cfg = ModelConfig.from_dict({"hidden_size": 4, "num_layers": 1, "epochs": 2, "verbosity": 0})
    with pytest.raises(NonFiniteLossError, match="loss became"):
        train_model(poisoned, cfg)


def test_trial_timeout_fails_the_trial_with_reason(prepared, tmp_path):
    cfg = StudyConfig(model={"hidden_size": 4, "num_layers": 1, "epochs": 2, "batch_size": 32, "verbosity": 0},
                      schemes=["unweighted"])
    url = f"sqlite:///{tmp_path}/t.db"
    # Every trial times out here: after a run of failures the study stops with a clear error.
    with pytest.raises(StudyError, match="failed in a row; last reason: trial ran"):
        tune(prepared, url, "t", 1, cfg, trial_timeout=0.001)
    first = optuna.load_study(study_name="t", storage=url).trials[0]
    assert first.state == TrialState.FAIL and "--trial-timeout" in first.user_attrs["fail_reason"]
    assert first.user_attrs["epochs_run"] == 1


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_bad_input_one_line_exit_2_nothing_written(tmp_path, cache_dir, capsys):
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database\n" * 10)
    digest = _digest(junk)
    for argv in (["tune", "--storage", f"sqlite:///{junk}", "--cache-dir", str(cache_dir), "--sample-docs", "12"],
                 ["export", "--study", "x", "--storage", f"sqlite:///{junk}"],
                 ["report", "--study", "x", "--storage", f"sqlite:///{junk}"]):
        assert "is not a SQLite database" in one_line_error(capsys, argv)
    assert _digest(junk) == digest
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "holds no .ann files" in one_line_error(capsys, ["tune", "--data", str(empty), "--storage",
                                                            f"sqlite:///{tmp_path}/d.db"])
    assert not (tmp_path / "d.db").exists()
    assert "invalid JSON" in one_line_error(capsys, ["train", "--weights", "{not json", "--out",
                                                     str(tmp_path / "o.json")])
    assert not (tmp_path / "o.json").exists()


def test_export_failure_keeps_the_previous_file(tmp_path, monkeypatch, capsys):
    url = f"sqlite:///{tmp_path}/x.db"
    optuna.create_study(study_name="empty", storage=url)
    out = tmp_path / "best.json"
    out.write_text('{"class_weights": {"Nomenclature": 2.0, "Description": 1.5, "Misc": 1.0}}\n')
    digest = _digest(out)
    assert main(["export", "--study", "empty", "--storage", url, "-o", str(out)]) == 2
    assert _digest(out) == digest
    from weight_tuner import paths

    def broken_fsync(fd):
        raise OSError("disk full")

    monkeypatch.setattr(paths.os, "fsync", broken_fsync)
    with pytest.raises(OSError):
        paths.atomic_write_bytes(out, b"partial")
    assert _digest(out) == digest
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".best.json")] == []


def _tree(root):
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else None for p in sorted(root.rglob("*"))}


BAD_TOML = {"model-not-a-table": "model = 5\n",
            "bound-not-a-number": '[space]\nnomenclature = [1, "a"]\n',
            "window-size-not-a-list": "[space]\nwindow_size = 10\n",
            "negative-startup-trials": "[pruner]\nn_startup_trials = -3\n",
            "fractional-epochs": "[space]\nepochs = [1.5, 3]\n",
            # was replaced by the cv design's Wilcoxon pruner without a word (issue 47, 3)
            "cv-with-another-pruner": '[evaluation]\ndesign = "cv"\n[pruner]\ntype = "median"\n'}


@pytest.mark.parametrize("case", ["model-config-null", *BAD_TOML, "unreachable-postgres", "export-onto-directory",
                                  "export-under-a-file", "predict-missing-file", "predict-directory",
                                  "weights-inline-list"])
def test_each_bad_input_is_one_line_exit_2_and_writes_nothing(case, tmp_path, monkeypatch, capsys):
    work = tmp_path / "work"
    work.mkdir()
    (work / "good.ann").write_text("[@Agaricus pallidus Singer, sp. nov.#Nomenclature*]\n")
    (work / "a-file").write_text("not a directory\n")
    (work / "outdir").mkdir()
    monkeypatch.chdir(work)
    storage = "sqlite:///studies/s.db"
    if case == "model-config-null":
        (work / "cfg.json").write_text('{"model_config": null}')
        argv = ["train", "--config", "cfg.json", "--out", "o.json"]
    elif case in BAD_TOML:
        (work / "bad.toml").write_text(BAD_TOML[case])
        argv = ["tune", "--config", "bad.toml", "--storage", storage, "--sample-docs", "12"]
    elif case == "unreachable-postgres":
        argv = ["tune", "--storage", "postgresql+psycopg2://postgres@127.0.0.1:5999/test", "--sample-docs", "12"]
    elif case == "export-onto-directory":
        argv = ["export", "--study", "e", "--storage", storage, "-o", "outdir"]
    elif case == "export-under-a-file":
        argv = ["export", "--study", "e", "--storage", storage, "-o", "a-file/best.json"]
    elif case == "predict-missing-file":
        argv = ["predict", "--model", "m.keras", "good.ann", "missing.txt"]
    elif case == "predict-directory":
        argv = ["predict", "--model", "m.keras", "outdir"]
    else:
        argv = ["train", "--weights", "[1,2,3]", "--out", "o.json"]
    if case.startswith("export"):
        (work / "studies").mkdir()
        exportable_study(storage)
    before = _tree(work)
    one_line_error(capsys, argv)
    assert _tree(work) == before


def test_a_storage_that_cannot_be_written_is_one_line(tmp_path, monkeypatch, capsys):
    # As a read-only study folder does for a non-root user (tests here run as root, whom permissions do not stop).
    import weight_tuner.search.run as run_mod

    def read_only(*args, **kwargs):
        try:
            raise PermissionError(13, "attempt to write a readonly database")
        except PermissionError as exc:
            raise optuna.exceptions.StorageInternalError("An exception is raised during the commit.") from exc

    monkeypatch.setattr(run_mod, "create_or_resume", read_only)
    monkeypatch.chdir(tmp_path)
    assert main(["tune", "--storage", f"sqlite:///{tmp_path}/r.db", "--sample-docs", "12", "--cache-dir", ""]) == 2
    err = capsys.readouterr().err.strip()  # the corpus report, then one error line
    assert err.splitlines()[-1] == ("weight-tuner: error: storage: cannot write (PermissionError: [Errno 13] "
                                    "attempt to write a readonly database)")
    assert "Traceback" not in err


@pytest.mark.parametrize("full", ["database", "file"])
def test_a_full_disk_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys, full):
    """Disk full (issue 44, 6; probed on a 15 MB tmpfs): SQLite's "database or disk is full" under Optuna's
    StorageInternalError under Optuna's own "Should not reach." assertion was a 271-line double traceback, exit 1;
    a model file that cannot be written raised OSError ENOSPC. Each is one line naming what could not be
    written, exit 2."""
    import errno
    import sqlite3

    import weight_tuner.search.run as run_mod

    def disk_full(*args, **kwargs):
        if full == "file":
            raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "f" / "trial-0.keras"))
        try:
            try:
                raise sqlite3.OperationalError("database or disk is full")
            except sqlite3.OperationalError as exc:
                raise optuna.exceptions.StorageInternalError("An exception is raised during the commit.") from exc
        except optuna.exceptions.StorageInternalError:
            raise AssertionError("Should not reach.")  # as Optuna's _run_trial, failing to record the failure

    monkeypatch.setattr(run_mod, "create_or_resume", disk_full)
    monkeypatch.chdir(tmp_path)
    assert main(["tune", "--study", "f", "--sample-docs", "12", "--cache-dir", ""]) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    assert err.splitlines()[-1] == ("weight-tuner: error: storage sqlite:///studies/f.db: cannot write: the database "
                                    "or the disk under it is full" if full == "database" else
                                    f"weight-tuner: error: cannot write {tmp_path}/f/trial-0.keras: no space left on "
                                    "the device (No space left on device)")


def test_report_that_cannot_write_its_plots_is_one_line(tmp_path, capsys):
    url = f"sqlite:///{tmp_path}/p.db"
    study = optuna.create_study(study_name="p", storage=url)
    study.set_user_attr("search_space", {})  # as tune made it
    study.set_user_attr("model_config", {})
    study.optimize(lambda t: t.suggest_float("w_Nomenclature", 0.1, 10), n_trials=2)
    (tmp_path / "p").write_text("a file where the plots folder should be\n")
    assert f"cannot write {tmp_path / 'p' / 'report.html'}" in one_line_error(capsys, ["report", "--study", "p",
                                                                                       "--storage", url])


def test_written_files_respect_the_umask(tmp_path):
    from weight_tuner.paths import atomic_write_bytes

    old = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "x.json", b"{}")
    finally:
        os.umask(old)
    assert (tmp_path / "x.json").stat().st_mode & 0o777 == 0o644


def test_a_saved_bundle_is_readable_as_the_rest_of_the_study(prepared, tmp_path):
    """The .keras file was written 0600 beside 0644 siblings: a shared models folder could not read it."""
    from weight_tuner.model import build_model
    from weight_tuner.paths import bundle_paths
    from weight_tuner.bundles import save_bundle

    from conftest import tiny_config

    cfg = tiny_config(epochs=1)
    old = os.umask(0o022)
    try:
        save_bundle(build_model(prepared.featurizer.n_features, cfg), prepared.featurizer, cfg, tmp_path / "m.keras")
    finally:
        os.umask(old)
    paths = bundle_paths(tmp_path / "m.keras")
    assert {p.stat().st_mode & 0o777 for p in (paths.keras, paths.featurizer, paths.config, paths.manifest)} == {0o644}
