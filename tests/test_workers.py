"""tune --jobs N: N processes on one study through the storage, each trial and needed unit run once."""

import os
import signal
import time
from collections import Counter
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from sqlalchemy.engine import make_url

from weight_tuner.paths import STORAGE_ENV
from weight_tuner.workers import LocalWorkers, thread_share

from test_paths import url_with_password
from test_reliability import PG_URL, _pg_available, cli, study_toml, wait_for

TRIALS = 5
EVALUATION = ["--folds", "2", "--repeats", "2", "--confirm-top", "2"]


def _tune_args(url, name, toml, *extra):
    return ["tune", "--storage", url, "--study", name, "--config", str(toml), "--trials", str(TRIALS), *EVALUATION,
            "--refits", "0", "--jobs", "2", *extra]


def _children(pid):
    """The live processes whose parent is ``pid``."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def _cmdline(pid):
    return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()


def _check_exactly_once(url, name):
    study = optuna.load_study(study_name=name, storage=url)
    finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    assert len(finished) == TRIALS
    schemes = Counter(t.user_attrs.get("scheme") for t in finished if t.user_attrs.get("scheme") != "search")
    assert all(n == 1 for n in schemes.values()), schemes  # no enqueued trial taken twice (Optuna #4002)
    companion = optuna.load_study(study_name=study.user_attrs["confirmation_study"], storage=url)
    done = companion.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    pairs = Counter((t.user_attrs["candidate"], t.user_attrs["unit"]) for t in done)
    assert all(n == 1 for n in pairs.values()), pairs
    counted = {(name_, unit) for name_, c in study.user_attrs["confirmation"]["candidates"].items()
               if name_ != "thresholds" for unit in c["units"]}
    assert counted and counted <= set(pairs)  # every run the decision reads was trained once
    assert not companion.get_trials(deepcopy=False, states=(TrialState.WAITING, TrialState.RUNNING))
    return study, done


def test_thread_share_divides_the_cores(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    assert thread_share(2)["TF_NUM_INTRAOP_THREADS"] == "2"
    assert thread_share(8)["TF_NUM_INTEROP_THREADS"] == "1"
    url = url_with_password("pw", "h/db", user="u")
    workers = LocalWorkers(3, url, ["--study", "s"])
    assert "pw" not in " ".join(workers.command()) and workers.command()[-3:] == ["worker", "--study", "s"]
    monkeypatch.setenv(STORAGE_ENV, "sqlite:///other.db")
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # set by the user: kept
    monkeypatch.delenv("TF_NUM_INTRAOP_THREADS", raising=False)
    env = workers.environment()
    assert env[STORAGE_ENV] == url and env["OMP_NUM_THREADS"] == "3"
    assert env["TF_NUM_INTRAOP_THREADS"] == "1"  # 4 cores over 3 jobs


def test_a_local_worker_repeats_the_data_and_planning_options_but_not_the_storage():
    from weight_tuner.cli import _worker_args, build_parser

    args = build_parser().parse_args(["tune", "--storage", url_with_password("secret", "h/db"), "--study", "s", "--trials", "7",
                                      "--sample-docs", "30", "--split-seed", "3", "--test-group", "J1",
                                      "--no-racing", "--members", "/m"])
    line = _worker_args(args)
    assert "secret" not in " ".join(line) and "--storage" not in line
    for pair in (["--trials", "7"], ["--sample-docs", "30"], ["--split-seed", "3"], ["--test-group", "J1"],
                 ["--members", "/m"]):
        assert line[line.index(pair[0]):line.index(pair[0]) + 2] == pair
    assert "--no-racing" in line  # a worker that plans the confirmation must honour tune's --no-racing
    assert build_parser().parse_args(["worker", *line]).no_racing


def test_two_jobs_run_each_trial_and_unit_run_once(tmp_path, cache_dir):
    url = f"sqlite:///{tmp_path}/j.db"
    toml = study_toml(tmp_path, epochs=2)
    proc = cli(_tune_args(url, "j", toml), cache_dir, cwd=tmp_path)
    wait_for(lambda: bool(_children(proc.pid)), proc, timeout=120, what="a local worker")
    children = _children(proc.pid)
    assert all(str(tmp_path) not in _cmdline(c) and "sqlite" not in _cmdline(c) for c in children)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-8000:]
    assert "started 1 local worker" in err and "Recommendation:" in out
    _, done = _check_exactly_once(url, "j")
    assert len({t.user_attrs["pid"] for t in done}) == 2  # both processes took unit runs
    assert not any(Path(f"/proc/{c}").exists() and "weight_tuner" in _cmdline(c) for c in children)


def test_a_killed_local_worker_loses_nothing(tmp_path, cache_dir):
    url = f"sqlite:///{tmp_path}/k.db"
    toml = study_toml(tmp_path, epochs=12)  # trials long enough to be killed mid-way
    proc = cli(_tune_args(url, "k", toml, "--heartbeat", "1"), cache_dir, cwd=tmp_path)

    def two_running():
        try:
            ts = optuna.load_study(study_name="k", storage=url).trials
        except KeyError:
            return False
        return sum(t.state == TrialState.RUNNING for t in ts) >= 2

    wait_for(two_running, proc, timeout=240, what="a trial in each process")
    os.kill(_children(proc.pid)[0], signal.SIGKILL)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-8000:]
    assert "exited with code -9" in err
    study, _ = _check_exactly_once(url, "k")
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    assert len(failed) == 1
    retried = optuna.storages.RetryFailedTrialCallback.retried_trial_number
    retries = [t for t in study.trials if retried(t) == failed[0].number]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE  # by the process still running
    assert study.user_attrs["recommendation"]["decision"] in ("weights", "thresholds", "no_weights")


def test_ctrl_c_stops_every_process_and_no_password_is_on_a_command_line(tmp_path, cache_dir):
    secret = "pW@d!x%41"
    if _pg_available():  # the test server trusts local connections, so any password connects
        url = make_url(PG_URL).set(password=secret).render_as_string(hide_password=False)
        name = f"wt-jobs-{os.getpid()}-{int(time.time() * 1000)}"
    else:
        url, name = f"sqlite:///{tmp_path}/c.db", "c"
    toml = study_toml(tmp_path, epochs=12)
    proc = cli(_tune_args(url, name, toml), cache_dir, cwd=tmp_path)
    try:
        wait_for(lambda: bool(_children(proc.pid)), proc, timeout=120, what="a local worker")
        children = _children(proc.pid)
        for pid in [proc.pid, *children]:
            assert secret not in _cmdline(pid)
        assert all(STORAGE_ENV.encode() in Path(f"/proc/{c}/environ").read_bytes() for c in children)

        def running():
            try:
                return any(t.state == TrialState.RUNNING for t in optuna.load_study(study_name=name, storage=url).trials)
            except KeyError:
                return False

        wait_for(running, proc, timeout=240, what="a running trial")
        proc.send_signal(signal.SIGINT)  # to tune alone: its workers run in a session of their own
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 130, err[-8000:]
        deadline = time.time() + 60
        while time.time() < deadline and any(Path(f"/proc/{c}").exists() for c in children):
            time.sleep(0.5)
        assert not any(Path(f"/proc/{c}").exists() and "weight_tuner" in _cmdline(c) for c in children)
        left = optuna.load_study(study_name=name, storage=make_url(url).render_as_string(hide_password=False)).trials
        assert not any(t.state == TrialState.RUNNING for t in left)  # each process stopped at a safe point
        assert secret not in out + err
    finally:
        if proc.poll() is None:
            proc.kill()
        if url.startswith("postgresql"):
            for summary in optuna.study.get_all_study_summaries(PG_URL, include_best_trial=False):
                if summary.study_name.startswith(name):
                    optuna.delete_study(study_name=summary.study_name, storage=PG_URL)


@pytest.mark.parametrize("jobs", ["0", "x"])
def test_jobs_must_be_a_positive_integer(jobs, capsys):
    from weight_tuner.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["tune", "--jobs", jobs])
    assert exc.value.code == 2 and "--jobs" in capsys.readouterr().err


def test_the_second_signal_helper_gets_the_url_from_its_environment(tmp_path, monkeypatch):
    """A second Ctrl-C while the database is locked leaves the trial to a detached helper: the storage URL
    (which may hold a password) must not be on its command line, and the helper must still fail the trial."""
    import subprocess
    import sys

    from weight_tuner.study import objective

    url = f"sqlite:///{tmp_path}/h.db"
    study = optuna.create_study(study_name="h", storage=url)
    trial = study.ask()
    trial.suggest_float("w_Nomenclature", 0.1, 10.0)  # a trial with parameters is queued again
    started = []

    def locked(*args, **kwargs):
        raise RuntimeError("database is locked")

    monkeypatch.setattr(objective, "fail_abandoned_trial", locked)
    monkeypatch.setattr(subprocess, "Popen", lambda argv, **kw: started.append((argv, kw)))
    objective.abandon_trial(trial)
    (argv, kw), = started
    assert str(tmp_path) not in " ".join(argv) and kw["env"][STORAGE_ENV] == url
    monkeypatch.undo()
    # run the helper as started, for a process that is already gone: it fails the trial and queues it again
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    done = subprocess.run([*argv[:-1], str(gone.pid)], env=kw["env"], timeout=120)
    assert done.returncode == 0
    states = [t.state for t in optuna.load_study(study_name="h", storage=url).trials]
    assert states == [TrialState.FAIL, TrialState.WAITING]
