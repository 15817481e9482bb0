"""Many processes on one study, through its storage alone: `tune --jobs N`, `worker`s, several `tune`s at once.

Every trial and every needed unit run is trained once, whichever process takes it; the scores and the
decision are those of one process alone; a killed process loses nothing; Ctrl-C stops every process; no
storage password reaches a command line.
"""

import json
import os
import shutil
import signal
import sqlite3
import time
from collections import Counter
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from sqlalchemy.engine import make_url

from weight_tuner.cli import main
from weight_tuner.paths import STORAGE_ENV, models_dir
from weight_tuner.workers import LocalWorkers, thread_share

from support import (PG_URL, SAMPLE_DOCS, cli, companion_of, drop_pg_studies, pg_available, study_toml,
                     tunes_at_once, url_with_password, wait_for)

EVALUATION = ["--folds", "2", "--repeats", "1", "--confirm-top", "2"]  # 3 candidates x 2 units: 6 runs
RUNS = 6  # without racing; with it, a stopped candidate's later runs are not trained
SCHEMES = ("unweighted", "inverse_frequency", "sqrt_inverse_frequency")  # 3 trials: the schemes, in any process


def _args(url, name, toml, cache_dir, *extra):
    return ["--storage", url, "--study", name, "--config", str(toml), "--trials", "3", *EVALUATION,
            "--sample-docs", SAMPLE_DOCS, "--cache-dir", str(cache_dir), *extra]


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


def _workers_running(pid):
    """Whether ``pid`` has children and each runs the worker command already: between fork and exec a child
    still shows its parent's command line and environment (the check failed once in a fresh clone that way)."""
    children = _children(pid)
    try:
        return bool(children) and all(" worker " in f"{_cmdline(c)} " for c in children)
    except OSError:  # one exited meanwhile
        return False


def _gone(children, timeout=60):
    """Whether every one of ``children`` has exited (waiting up to ``timeout`` seconds)."""
    deadline = time.time() + timeout
    while time.time() < deadline and any(Path(f"/proc/{c}").exists() for c in children):
        time.sleep(0.5)
    return not any(Path(f"/proc/{c}").exists() and "weight_tuner" in _cmdline(c) for c in children)


def _unit_scores(study):
    """Every candidate's per-unit scores, as the decision read them."""
    cands = study.user_attrs["confirmation"]["candidates"]
    return {name: {k: u["scores"] for k, u in c["units"].items()} for name, c in cands.items()}


def _check_exactly_once(url, name, trials=3):
    """Every search trial and unit run trained once, every run the decision reads trained, every planned run
    trained or raced out, and nothing left waiting or running. Returns the study and its trained runs."""
    study = optuna.load_study(study_name=name, storage=url)
    finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    assert len(finished) == trials
    schemes = Counter(t.user_attrs.get("scheme") for t in finished if t.user_attrs.get("scheme") != "search")
    assert all(n == 1 for n in schemes.values()), schemes  # no enqueued trial taken twice (Optuna #4002)
    companion = companion_of(url, study)
    assert companion.metric_names == ["held_out_important_f1"]  # the dashboard's axis names what it plots
    done = companion.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    pairs = Counter((t.user_attrs["candidate"], t.user_attrs["unit"]) for t in done)
    assert all(n == 1 for n in pairs.values()), pairs
    counted = {(name_, unit) for name_, c in study.user_attrs["confirmation"]["candidates"].items()
               if name_ != "thresholds" for unit in c["units"]}
    assert counted and counted <= set(pairs)
    raced = companion.get_trials(deepcopy=False, states=(TrialState.PRUNED,))
    assert all("raced_out" in t.user_attrs for t in raced)
    plan = companion.user_attrs["plan"]
    planned = len(plan["units"]) * (len(plan["candidates"]) - 1)  # thresholds ride on the unweighted runs
    assert len(set(pairs)) + len({(t.user_attrs["candidate"], t.user_attrs["unit"]) for t in raced}) >= planned
    assert not companion.get_trials(deepcopy=False, states=(TrialState.WAITING, TrialState.RUNNING))
    return study, done


def _same_as_one_process(study, reference):
    """The decision of one process training every run, and each counted unit score equal to its run there
    (racing counts a prefix of each stopped candidate's units)."""
    rec = study.user_attrs["recommendation"]
    full = reference["recommendation"]
    assert (rec["decision"], rec["candidate"]) == (full["decision"], full["candidate"])
    assert [r["candidate"] for r in rec["candidates"]] == reference["candidates"]
    if rec["decision"] != "no_weights":  # the recommended candidate ran every unit either way
        assert rec["diff_vs_unweighted"] == full["diff_vs_unweighted"]
    for name, units in _unit_scores(study).items():
        assert units and units == {k: reference["scores"][name][k] for k in units}, name


@pytest.fixture(scope="module")
def searched(tmp_path_factory, cache_dir):
    """A SQLite study whose search is done (`tune --no-confirm`): tests confirm copies of it."""
    tmp = tmp_path_factory.mktemp("searched")
    toml = study_toml(tmp, epochs=3, schemes=SCHEMES)
    assert main(["tune", *_args(f"sqlite:///{tmp}/s.db", "s", toml, cache_dir), "--no-confirm", "--jobs", "1"]) == 0
    return tmp / "s.db", toml


def _copy_of(searched, folder):
    db = folder / "s.db"
    shutil.copy(searched[0], db)
    shutil.copytree(searched[0].parent / "s", folder / "s")  # the search's kept models
    return f"sqlite:///{db}"


@pytest.fixture(scope="module")
def reference(searched, tmp_path_factory, cache_dir):
    """The same study confirmed by one process alone, training every run (--no-racing)."""
    url = _copy_of(searched, tmp_path_factory.mktemp("single"))
    assert main(["tune", *_args(url, "s", searched[1], cache_dir), "--refits", "0", "--no-racing", "--jobs", "1"]) == 0
    study = optuna.load_study(study_name="s", storage=url)
    trained = companion_of(url, study).get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    assert len(trained) == RUNS
    rec = study.user_attrs["recommendation"]
    return {"scores": _unit_scores(study), "recommendation": rec, "candidates": [r["candidate"] for r in rec["candidates"]]}


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
    from weight_tuner.cli import build_parser
    from weight_tuner.workers import worker_command_line

    args = build_parser().parse_args(["tune", "--storage", url_with_password("secret", "h/db"), "--study", "s", "--trials", "7",
                                      "--sample-docs", "30", "--split-seed", "3", "--test-group", "J1",
                                      "--no-racing", "--members", "/m"])
    line = worker_command_line(args)
    assert "secret" not in " ".join(line) and "--storage" not in line
    for pair in (["--trials", "7"], ["--sample-docs", "30"], ["--split-seed", "3"], ["--test-group", "J1"],
                 ["--members", "/m"]):
        assert line[line.index(pair[0]):line.index(pair[0]) + 2] == pair
    assert "--no-racing" in line  # a worker that plans the confirmation must honour tune's --no-racing
    assert build_parser().parse_args(["worker", *line]).no_racing


def test_two_jobs_on_sqlite_share_each_trial_and_unit_run_once_and_decide_as_one_process(tmp_path, cache_dir,
                                                                                        reference):
    """`tune --jobs 2` on a new study: the search, the raced confirmation and the refits shared by tune and its
    local worker, which gets the storage URL through its environment, never its command line."""
    url, name, secret = f"sqlite:///{tmp_path}/j.db", "j", str(tmp_path)
    toml = study_toml(tmp_path, epochs=3, schemes=SCHEMES)
    proc = cli(["tune", *_args(url, name, toml, cache_dir)[:-4], "--refits", "3", "--jobs", "2"], cache_dir,
               cwd=tmp_path)  # cli() adds the data
    try:
        wait_for(lambda: _workers_running(proc.pid), proc, timeout=120, what="a local worker")
        children = _children(proc.pid)
        for pid in children:  # tune's own command line is the user's; its workers get the URL by environment
            assert secret not in _cmdline(pid) and url not in _cmdline(pid)
        assert all(STORAGE_ENV.encode() in Path(f"/proc/{c}/environ").read_bytes() for c in children)
        out, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-8000:]
    assert "started 1 local worker" in err and "Recommendation:" in out
    assert _gone(children)
    study, done = _check_exactly_once(url, name)
    assert len({(t.user_attrs["host"], t.user_attrs["pid"]) for t in done}) == 2  # both took unit runs
    assert all(t.user_attrs["seconds"] > 0 for t in done)
    _same_as_one_process(study, reference)
    # Issue 44, 3: no weights runs every unit, however early the race ends: the deployed model rests on all.
    rec, units = study.user_attrs["recommendation"], companion_of(url, study).user_attrs["plan"]["units"]
    assert sorted(study.user_attrs["confirmation"]["candidates"]["unweighted"]["units"]) == sorted(units)
    deployed = rec["deployed"]["candidate"]
    assert sorted(m["unit"] for m in rec["deployed"]["ensemble"]["members"]) == sorted(
        study.user_attrs["confirmation"]["candidates"][deployed]["units"]) == sorted(units)
    test = study.user_attrs["test_stats"]  # scored once, by tune, after the decision it reports
    assert test["decision"] == study.user_attrs["recommendation"]["decision"] and test["unweighted"]["stats"]["lines"] > 0
    # The refits: each trained once, the worker taking its share while tune ran the test check.
    refits = optuna.load_study(study_name=study.user_attrs["refit_plan"]["study"], storage=url)
    made = refits.get_trials(states=(TrialState.COMPLETE,))
    assert refits.metric_names == ["final_training_loss"]
    assert sorted(t.user_attrs["refit"] for t in made) == [0, 1, 2] and len(refits.trials) == 3
    assert {t.user_attrs["pid"] for t in made} - {proc.pid}, "the local worker trained no refit"
    entry = study.user_attrs["recommendation"]["deployed"]["refit"]
    assert entry["models"] == 3 and all((models_dir(url, name) / f).exists()
                                        for f in ("refit.keras", "refit-1.keras", "refit-2.keras"))
    con = sqlite3.connect(tmp_path / "j.db")
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    con.close()


def test_a_local_worker_killed_in_a_unit_run_loses_nothing(searched, tmp_path, cache_dir, reference):
    """kill -9 of tune's local worker while it trains a unit run (a trial of the companion study): tune fails
    it once its heartbeat is stale, runs it again, and decides exactly as one process alone."""
    url, name, toml = _copy_of(searched, tmp_path), "s", searched[1]
    argv = ["tune", *_args(url, name, toml, cache_dir)[:-4], "--refits", "0", "--jobs", "2", "--heartbeat", "1",
            "--no-racing"]  # every run needed: the retried run is trained, never raced out
    proc = cli(argv, cache_dir, cwd=tmp_path)
    child = []

    def child_in_a_unit_run():
        child[:] = child or _children(proc.pid)
        study = optuna.load_study(study_name=name, storage=url)
        if not child or "confirmation_study" not in study.user_attrs:
            return False
        running = companion_of(url, study).get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        return any(t.user_attrs.get("pid") == child[0] for t in running)

    wait_for(child_in_a_unit_run, proc, timeout=300, what="a unit run in the local worker")
    os.kill(child[0], signal.SIGKILL)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-8000:]
    assert "exited with code -9" in err
    study, done = _check_exactly_once(url, name)
    companion = companion_of(url, study)
    killed = companion.get_trials(deepcopy=False, states=(TrialState.FAIL,))
    assert len(killed) == 1 and killed[0].user_attrs["pid"] == child[0]
    retried = [t for t in done if (t.user_attrs["candidate"], t.user_attrs["unit"]) ==
               (killed[0].user_attrs["candidate"], killed[0].user_attrs["unit"])]
    assert len(retried) == 1 and retried[0].user_attrs["pid"] == proc.pid  # by the process still running
    assert len(done) == RUNS
    _same_as_one_process(study, reference)
    assert _unit_scores(study) == reference["scores"]  # every run trained, each as one process trains it


def _study_names(url):
    """The studies in a SQLite file, or none while the file or its tables are still being made (reading it then
    would race the creating process's schema set-up)."""
    import sqlalchemy

    try:
        return optuna.get_all_study_names(storage=url) if Path(url.removeprefix("sqlite:///")).exists() else []
    except sqlalchemy.exc.SQLAlchemyError:
        return []


def _study_runs(url, name):
    """``(finished, running)``: trials, unit runs and refits of the study and its companions finished (complete or
    pruned) and running now."""
    finished = running = 0
    for other in _study_names(url):
        if other == name or other.startswith(f"{name}."):
            for t in optuna.load_study(study_name=other, storage=url).get_trials(deepcopy=False):
                finished += t.state in (TrialState.COMPLETE, TrialState.PRUNED)
                running += t.state == TrialState.RUNNING
    return finished, running


def test_tune_jobs_2_interrupted_at_random_points_resumes_to_one_processs_decision(tmp_path, cache_dir, reference):
    """Issue 44: `tune --jobs 2` stopped at random points (Ctrl-C, SIGTERM, kill -9 of tune, then kill -9 of its
    worker), run again after each: no process of the study outlives a stop by 60 s, and the study ends with
    every trial and run trained once and the decision and unit scores of one process that was never stopped.
    The points are drawn by $WT_FAULT_SEED (default 44): the number of trials and runs finished before each."""
    import random

    seed = int(os.environ.get("WT_FAULT_SEED", "44"))
    rng = random.Random(seed)
    url, name = f"sqlite:///{tmp_path}/r.db", "r"
    argv = ["tune", *_args(url, name, study_toml(tmp_path, epochs=3, schemes=SCHEMES), cache_dir)[:-4],
            "--refits", "2", "--jobs", "2", "--heartbeat", "1"]
    # The worker's kill comes last: tune carries on after it and finishes the study.
    faults = [*rng.sample(["SIGINT", "SIGTERM", "kill -9 tune"], 3), "kill -9 worker"]
    points = sorted(rng.sample(range(7), len(faults)))  # of at least 9: 3 trials, 4 unit runs, 2 refits
    for fault, point in zip(faults, points):
        proc = cli(argv, cache_dir, cwd=tmp_path)
        try:
            def at_point():
                finished, running = _study_runs(url, name)
                return finished >= point and running > 0 and _workers_running(proc.pid)

            wait_for(at_point, proc, timeout=300, what=f"{point} finished runs and one running ({fault}, seed {seed})")
            time.sleep(rng.uniform(0.0, 0.5))
            children = _children(proc.pid)
            if fault == "kill -9 worker":
                os.kill(children[0], signal.SIGKILL)
            else:
                proc.send_signal({"SIGINT": signal.SIGINT, "SIGTERM": signal.SIGTERM}.get(fault, signal.SIGKILL))
            out, err = proc.communicate(timeout=300)
            expected = {"SIGINT": 130, "SIGTERM": 143, "kill -9 tune": -9, "kill -9 worker": 0}[fault]
            assert proc.returncode == expected, (fault, point, seed, err[-8000:])
            assert _gone(children, timeout=60), (fault, point, seed)
        finally:
            if proc.poll() is None:
                proc.kill()
    # The finished study once more: nothing to redo, the same decision.
    assert main([*argv[:-4], "--jobs", "1", "--sample-docs", SAMPLE_DOCS, "--cache-dir", str(cache_dir)]) == 0
    study, _ = _check_exactly_once(url, name)
    # A retried trial has a number of its own, so a candidate's name ("trial N") may differ: compare by weights.
    def by_weights(rec, scores):
        weights = {r["candidate"]: json.dumps(r["class_weights"], sort_keys=True) for r in rec["candidates"]}
        return ((rec["decision"], weights[rec["candidate"]]), sorted(weights.values()),
                {weights[n]: units for n, units in scores.items()})

    got, full = by_weights(study.user_attrs["recommendation"], _unit_scores(study)), by_weights(
        reference["recommendation"], reference["scores"])
    assert got[:2] == full[:2]
    for candidate, units in got[2].items():  # each counted unit run scored as one process's did
        assert units and units == {k: full[2][candidate][k] for k in units}, candidate
    entry = study.user_attrs["recommendation"]["deployed"]["refit"]
    assert entry["models"] == 2 and all((models_dir(url, name) / f).exists() for f in ("refit.keras", "refit-1.keras"))


def test_a_time_budget_is_kept_by_tune_its_worker_and_a_remote_worker(tmp_path, cache_dir):
    """Issue 46, 2: `tune --timeout` with --jobs 2 and a remote worker: no trial, unit run or refit starts once the
    budget is spent, every process ends on its own with nothing left RUNNING, and the decision says what the
    limit cut short."""
    url, name = f"sqlite:///{tmp_path}/t.db", "t"
    argv = ["tune", "--storage", url, "--study", name, "--config", str(study_toml(tmp_path, epochs=3)), "--trials",
            "500", "--jobs", "2", "--timeout", "40s", "--refits", "1", *EVALUATION]
    proc, remote = cli(argv, cache_dir, cwd=tmp_path), None
    try:
        wait_for(lambda: name in _study_names(url) and "time_budget" in optuna.load_study(
            study_name=name, storage=url).user_attrs, proc, timeout=120, what="the study's budget")
        remote = cli(["worker", "--storage", url, "--study", name, "--trials", "500"], cache_dir, cwd=tmp_path)
        out, err = proc.communicate(timeout=400)
        remote_out, remote_err = remote.communicate(timeout=120)
    finally:
        for p in (proc, remote):
            if p is not None and p.poll() is None:
                p.kill()
    assert proc.returncode == 0, err[-8000:]
    assert remote.returncode == 0, remote_err[-8000:]
    study = optuna.load_study(study_name=name, storage=url)
    budget = study.user_attrs["time_budget"]
    assert budget["timeout"] == "40s" and budget["search_over"]
    started = []
    for other in optuna.get_all_study_names(url):
        for t in optuna.load_study(study_name=other, storage=url).trials:
            assert t.state != TrialState.RUNNING, (other, t.number)
            if t.datetime_start is not None:
                started.append(t.datetime_start.timestamp())
    assert started and max(started) <= budget["until"] + 1.0  # nothing started once the budget was spent
    finished = len(study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED)))
    assert 0 < finished < 500
    if "recommendation" in study.user_attrs:  # decided on what finished, and saying so in every view
        cut = study.user_attrs["recommendation"]["time_limited"]
        assert cut["timeout"] == "40s" and cut["trials"] == finished and cut["trials_asked"] == 500
        assert f"Decided under a time limit (--timeout 40s): the search stopped at {finished} of 500 trials" in out
        assert "Decided under a time limit" in study.user_attrs["decision"]
    else:
        assert "No decision: the time budget (--timeout 40s) ended" in out


def test_a_timeout_is_a_duration(capsys):
    from weight_tuner.budget import parse_duration

    assert [parse_duration(t) for t in ("90", "90s", "30m", "2h", "1h30m", "1.5m")] == [90, 90, 1800, 7200, 5400, 90]
    for bad in ("", "0", "soon", "30x", "5m5h"):
        with pytest.raises(SystemExit) as stop:
            main(["tune", "--timeout", bad])
        assert stop.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "--timeout" in err[0] and repr(bad) in err[0], err


def test_ctrl_c_stops_every_process_and_no_password_is_on_a_command_line(tmp_path, cache_dir):
    secret = "pW@d!x%41"
    if pg_available():  # the test server trusts local connections, so any password connects
        url = make_url(PG_URL).set(password=secret).render_as_string(hide_password=False)
        name = f"wt-jobs-{os.getpid()}-{int(time.time() * 1000)}"
    else:
        url, name = f"sqlite:///{tmp_path}/c.db", "c"
    toml = study_toml(tmp_path, epochs=12)
    proc = cli(["tune", "--storage", url, "--study", name, "--config", str(toml), "--trials", "5", "--jobs", "2"],
               cache_dir, cwd=tmp_path)
    try:
        wait_for(lambda: _workers_running(proc.pid), proc, timeout=120, what="a local worker")
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
        assert _gone(children)
        left = optuna.load_study(study_name=name, storage=make_url(url).render_as_string(hide_password=False)).trials
        assert not any(t.state == TrialState.RUNNING for t in left)  # each process stopped at a safe point
        assert secret not in out + err
    finally:
        if proc.poll() is None:
            proc.kill()
        if url.startswith("postgresql"):
            drop_pg_studies(name)


def test_a_local_worker_stops_when_its_tune_is_killed(tmp_path, cache_dir):
    """kill -9 of tune passes nothing on: its worker, re-parented, notices, stops at a safe point (its trial failed
    and queued again, nothing of its own left RUNNING) and exits; it does not run the study on alone."""
    url, name = f"sqlite:///{tmp_path}/o.db", "o"
    proc = cli(["tune", "--storage", url, "--study", name, "--config", str(study_toml(tmp_path, epochs=12)),
                "--trials", "5", "--jobs", "2", "--heartbeat", "1"], cache_dir, cwd=tmp_path)
    try:
        def both_training():
            try:
                ts = optuna.load_study(study_name=name, storage=url).trials
            except KeyError:
                return False
            return sum(t.state == TrialState.RUNNING for t in ts) == 2

        wait_for(both_training, proc, timeout=240, what="a trial in tune and one in its worker")
        children = _children(proc.pid)
        assert children
        proc.kill()
        proc.wait(timeout=30)
        assert _gone(children, timeout=60)
        ts = optuna.load_study(study_name=name, storage=url).trials
        assert sum(t.state == TrialState.RUNNING for t in ts) == 1  # tune's own, until a heartbeat check fails it
        stopped = [t for t in ts if t.state == TrialState.FAIL]
        assert len(stopped) == 1 and "interrupted" in stopped[0].user_attrs["fail_reason"]
        assert any(t.user_attrs.get("retry_of") == stopped[0].number for t in ts if t.state == TrialState.WAITING), \
            [(t.number, t.state, t.user_attrs.get("retry_of"), t.user_attrs.get("scheme")) for t in ts]
    finally:
        if proc.poll() is None:
            proc.kill()


def test_tune_waits_for_its_workers_under_one_deadline(monkeypatch):
    """Two children that never stop: both are killed once the one deadline passes, not one deadline each."""
    import subprocess
    import sys

    workers = LocalWorkers(3, "sqlite:///unused.db", [])
    workers.processes = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) for _ in range(2)]
    t0 = time.monotonic()
    workers.wait(2.0)
    assert time.monotonic() - t0 < 3.5
    assert all(p.poll() is not None for p in workers.processes)


def test_three_tunes_started_at_once_on_a_new_sqlite_file_all_finish(tmp_path, cache_dir):
    tunes_at_once(f"sqlite:///{tmp_path}/new.db", "s", tmp_path, cache_dir, processes=3)


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

    from weight_tuner import retries

    url = f"sqlite:///{tmp_path}/h.db"
    study = optuna.create_study(study_name="h", storage=url)
    trial = study.ask()
    trial.suggest_float("w_Nomenclature", 0.1, 10.0)  # a trial with parameters is queued again
    started = []

    def locked(*args, **kwargs):
        raise RuntimeError("database is locked")

    monkeypatch.setattr(retries, "fail_abandoned_trial", locked)
    monkeypatch.setattr(subprocess, "Popen", lambda argv, **kw: started.append((argv, kw)))
    retries.abandon_trial(trial)
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


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_trial_whose_process_died_before_its_first_heartbeat_is_failed_and_queued_once(tmp_path, backend):
    """A process killed after taking a trial but before its heartbeat thread's first beat leaves a RUNNING trial
    with no heartbeat: Optuna's stale check skips it, and every process waiting for it waited forever (the kill -9
    test above hung that way). ``StaleTrials`` fails it once it has seen it without a beat for two grace periods of
    its own clock, and leaves new and beating trials alone. Start times written by other hosts' clocks (an hour
    ahead, an hour behind) change nothing: the check used to compare them with this host's clock."""
    from datetime import datetime, timedelta

    import sqlalchemy

    from weight_tuner.retries import StaleTrials
    from weight_tuner.storage import open_storage, storage_of

    if backend == "postgresql" and not pg_available():
        pytest.skip(f"no PostgreSQL server at {PG_URL}")
    url = PG_URL if backend == "postgresql" else f"sqlite:///{tmp_path}/b.db"
    name = f"wt-beatless-{os.getpid()}-{int(time.time() * 1000)}"
    try:
        study = optuna.create_study(study_name=name, storage=open_storage(url, heartbeat=1))
        dead, behind = study.ask(), study.ask()
        for trial in (dead, behind):
            trial.suggest_float("w_Nomenclature", 0.1, 10.0)
        with sqlalchemy.create_engine(url).begin() as connection:  # clocks of other hosts
            for trial, hours in ((dead, 1), (behind, -1)):
                connection.execute(sqlalchemy.text("UPDATE trials SET datetime_start = :t WHERE trial_id = :i"),
                                   {"t": str(datetime.now() + timedelta(hours=hours)), "i": trial._trial_id})

        def states():
            fresh = optuna.load_study(study_name=name, storage=open_storage(url, heartbeat=1))
            return [t.state for t in fresh.trials], fresh

        now, grace = [1000.0], storage_of(study)._backend.grace_period  # 3 beats
        check = StaleTrials(states()[1], clock=lambda: now[0])
        optuna.storages.fail_stale_trials(study)
        check.check()  # first seen without a beat: a live process may not have beaten yet
        assert states()[0] == [TrialState.RUNNING] * 2
        now[0] += 2 * grace - 0.1  # two graces of this clock have not passed
        storage_of(study).record_heartbeat(behind._trial_id)  # its process is alive: it beats
        late = study.ask()  # taken meanwhile, not beating yet
        late.suggest_float("w_Nomenclature", 0.1, 10.0)
        check.check()
        assert states()[0] == [TrialState.RUNNING] * 3
        now[0] += 0.2
        for _ in range(2):  # a second look queues nothing more
            check.check()
            found, fresh = states()
            assert found == [TrialState.FAIL, TrialState.RUNNING, TrialState.RUNNING, TrialState.WAITING]
        assert fresh.trials[3].params == dead.params
        now[0] += 2 * grace
        check.check()  # the late one, two graces after this check first saw it
        assert states()[0][2] == TrialState.FAIL
    finally:
        if backend == "postgresql":
            drop_pg_studies(name)
