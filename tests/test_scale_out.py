"""Every worker confirms: the (candidate, unit) runs go through the storage, exactly once, deterministic."""

import os
import shutil
import signal
import time

import optuna
import pytest
from optuna.trial import TrialState

from weight_tuner.cli import main

from test_reliability import PG_URL, SAMPLE_DOCS, _pg_available, cli, study_toml, wait_for

EVALUATION = ["--folds", "2", "--repeats", "2", "--confirm-top", "2"]  # 3 candidates x 4 units: 12 runs
RUNS = 12  # without racing; with it, a stopped candidate's later runs are not trained


def _args(url, name, toml, cache_dir):
    return ["--storage", url, "--study", name, "--config", str(toml), "--trials", "3", *EVALUATION,
            "--sample-docs", SAMPLE_DOCS, "--cache-dir", str(cache_dir)]


def _toml(tmp_path):
    return study_toml(tmp_path, epochs=3, schemes=("unweighted", "inverse_frequency", "sqrt_inverse_frequency"))


def _unit_scores(study):
    """Every candidate's per-unit scores, as the decision read them."""
    cands = study.user_attrs["confirmation"]["candidates"]
    return {name: {k: u["scores"] for k, u in c["units"].items()} for name, c in cands.items()}


def _companion(url, study):
    return optuna.load_study(study_name=study.user_attrs["confirmation_study"], storage=url)


def _assert_each_run_counted_once(study, companion):
    """No run trained twice, every run the decision reads trained, and nothing left waiting or running."""
    done = [t for t in companion.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    pairs = [(t.user_attrs["candidate"], t.user_attrs["unit"]) for t in done]
    counted = {(name, unit) for name, c in study.user_attrs["confirmation"]["candidates"].items()
               if name != "thresholds" for unit in c["units"]}
    assert len(pairs) == len(set(pairs)) <= RUNS and counted and counted <= set(pairs)
    raced = [t for t in companion.get_trials(deepcopy=False) if t.state == TrialState.PRUNED]
    assert all("raced_out" in t.user_attrs for t in raced)
    assert len(set(pairs)) + len(raced) >= RUNS  # every planned run either trained or raced out
    assert not companion.get_trials(deepcopy=False, states=(TrialState.WAITING, TrialState.RUNNING))
    return done


@pytest.fixture(scope="module")
def searched(tmp_path_factory, cache_dir):
    """A SQLite study whose search is done (`tune --no-confirm`): each test confirms a copy of it."""
    tmp = tmp_path_factory.mktemp("searched")
    toml = _toml(tmp)
    assert main(["tune", *_args(f"sqlite:///{tmp}/s.db", "s", toml, cache_dir), "--no-confirm"]) == 0
    return tmp / "s.db", toml


def _copy_of(searched, folder):
    db = folder / "s.db"
    shutil.copy(searched[0], db)
    shutil.copytree(searched[0].parent / "s", folder / "s")  # the search's kept models
    return f"sqlite:///{db}"


@pytest.fixture(scope="module")
def reference(searched, tmp_path_factory, cache_dir):
    """The same study confirmed by one process alone."""
    url = _copy_of(searched, tmp_path_factory.mktemp("single"))
    assert main(["tune", *_args(url, "s", searched[1], cache_dir), "--refits", "0"]) == 0
    study = optuna.load_study(study_name="s", storage=url)
    trained = _companion(url, study).get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return {"scores": _unit_scores(study), "decision": study.user_attrs["recommendation"]["decision"],
            "recommendation": study.user_attrs["recommendation"], "trained": len(trained),
            "candidates": [r["candidate"] for r in study.user_attrs["recommendation"]["candidates"]]}


def _tune_and_worker_confirm_together(url, name, toml, tmp_path, cache_dir, reference):
    # the search is done; tune and a worker, started together, share its confirmation
    worker = cli(["worker", "--storage", url, "--study", name, "--trials", "3"], cache_dir, cwd=tmp_path)
    tuner = cli(["tune", *_args(url, name, toml, cache_dir)[:-4], "--refits", "0"], cache_dir, cwd=tmp_path)  # cli() adds the data
    outputs = {}
    for label, proc in (("tune", tuner), ("worker", worker)):
        outputs[label], err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-8000:]
    assert "Recommendation:" in outputs["tune"] and "no unit run" in outputs["worker"]
    study = optuna.load_study(study_name=name, storage=url)
    done = _assert_each_run_counted_once(study, _companion(url, study))
    processes = {(t.user_attrs["host"], t.user_attrs["pid"]) for t in done}
    assert len(processes) >= 2, processes  # both took unit runs
    assert all(t.user_attrs["seconds"] > 0 for t in done)
    assert _unit_scores(study) == reference["scores"]  # the same scores whichever process ran a unit
    rec = study.user_attrs["recommendation"]
    assert rec["decision"] == reference["decision"]
    assert [r["candidate"] for r in rec["candidates"]] == reference["candidates"]
    assert "test_stats" in study.user_attrs  # scored once, by tune, after the decision


def test_tune_and_a_worker_share_the_confirmation_on_sqlite(searched, tmp_path, cache_dir, reference):
    _tune_and_worker_confirm_together(_copy_of(searched, tmp_path), "s", searched[1], tmp_path, cache_dir, reference)


def test_racing_decides_as_training_every_run_does(searched, tmp_path, cache_dir, reference):
    url = _copy_of(searched, tmp_path)
    assert main(["tune", *_args(url, "s", searched[1], cache_dir), "--refits", "0", "--no-racing"]) == 0
    study = optuna.load_study(study_name="s", storage=url)
    full = study.user_attrs["recommendation"]
    trained = _companion(url, study).get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    assert len(trained) == RUNS
    assert (full["decision"], full["candidate"]) == (reference["decision"], reference["recommendation"]["candidate"])
    if full["decision"] != "no_weights":  # the recommended candidate ran every unit either way
        assert full["diff_vs_unweighted"] == reference["recommendation"]["diff_vs_unweighted"]
    assert reference["trained"] <= RUNS
    for name, units in _unit_scores(study).items():  # a raced candidate's units are a prefix of the full ones
        raced = reference["scores"][name]
        assert {k: units[k] for k in raced} == raced


@pytest.mark.skipif(not _pg_available(), reason=f"no PostgreSQL server answers at {PG_URL}")
def test_tune_and_a_worker_share_the_confirmation_on_postgresql(tmp_path, cache_dir, reference):
    name = f"wt-scale-{os.getpid()}-{int(time.time() * 1000)}"
    toml = _toml(tmp_path)
    try:
        assert main(["tune", *_args(PG_URL, name, toml, cache_dir), "--no-confirm"]) == 0  # the search
        _tune_and_worker_confirm_together(PG_URL, name, toml, tmp_path, cache_dir, reference)
    finally:
        for summary in optuna.study.get_all_study_summaries(PG_URL, include_best_trial=False):
            if summary.study_name.startswith(name):
                optuna.delete_study(study_name=summary.study_name, storage=PG_URL)


def test_a_killed_workers_unit_run_is_retried_and_counted_once(searched, tmp_path, cache_dir, reference):
    url, name, toml = _copy_of(searched, tmp_path), "s", searched[1]
    worker = cli(["worker", "--storage", url, "--study", name, "--trials", "3", "--heartbeat", "1"], cache_dir,
                 cwd=tmp_path)

    def unit_run_running():
        study = optuna.load_study(study_name=name, storage=url)
        if "confirmation_study" not in study.user_attrs:
            return False
        return bool(_companion(url, study).get_trials(deepcopy=False, states=(TrialState.RUNNING,)))

    wait_for(unit_run_running, worker, timeout=300, what="a unit run in the worker")
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait(timeout=30)
    # tune picks up what is left, and the killed run once its heartbeat is stale (3 beats of 1 s)
    assert main(["tune", *_args(url, name, toml, cache_dir), "--heartbeat", "1", "--refits", "0"]) == 0
    study = optuna.load_study(study_name=name, storage=url)
    companion = _companion(url, study)
    killed = [t for t in companion.get_trials(deepcopy=False) if t.state == TrialState.FAIL]
    assert len(killed) == 1
    _assert_each_run_counted_once(study, companion)
    retried = [t for t in companion.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
               if t.user_attrs["candidate"] == killed[0].user_attrs["candidate"]
               and t.user_attrs["unit"] == killed[0].user_attrs["unit"]]
    assert len(retried) == 1 and retried[0].user_attrs["pid"] == os.getpid()
    assert _unit_scores(study) == reference["scores"]
    assert study.user_attrs["recommendation"]["decision"] == reference["decision"]


def _three_tunes_at_once(url, name, tmp_path, cache_dir):
    """Start 3 `tune` on one study that does not exist yet; every one must finish, on one study made once."""
    toml = study_toml(tmp_path, epochs=2, schemes=("unweighted", "inverse_frequency", "sqrt_inverse_frequency"))
    argv = ["tune", "--storage", url, "--study", name, "--config", str(toml), "--trials", "4", "--folds", "2",
            "--repeats", "1", "--confirm-top", "1", "--refits", "1", "--jobs", "1"]
    procs = [cli(argv, cache_dir, cwd=tmp_path) for _ in range(3)]
    outs = [p.communicate(timeout=400) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-4000:]
    study = optuna.load_study(study_name=name, storage=url)
    schemes = [t.user_attrs.get("scheme") for t in study.trials]
    assert len(study.trials) == 4 and all(t.state == TrialState.COMPLETE for t in study.trials)
    assert sorted(schemes) == ["inverse_frequency", "search", "sqrt_inverse_frequency", "unweighted"]  # each once
    decisions = {out.split("Recommendation: ", 1)[1].splitlines()[0] for out, _ in outs}
    assert len(decisions) == 1  # one decision, printed alike by the three
    companion = _companion(url, study)
    pairs = [(t.user_attrs["candidate"], t.user_attrs["unit"]) for t in companion.trials
             if t.state == TrialState.COMPLETE]
    assert len(pairs) == len(set(pairs))  # no unit run trained twice


def test_three_tunes_started_at_once_on_a_new_sqlite_file_all_finish(tmp_path, cache_dir):
    _three_tunes_at_once(f"sqlite:///{tmp_path}/new.db", "s", tmp_path, cache_dir)


@pytest.mark.skipif(not _pg_available(), reason=f"no PostgreSQL server answers at {PG_URL}")
def test_three_tunes_started_at_once_on_postgresql_all_finish(tmp_path, cache_dir):
    name = f"wt-three-{os.getpid()}-{int(time.time() * 1000)}"
    try:
        _three_tunes_at_once(PG_URL, name, tmp_path, cache_dir)
    finally:
        for summary in optuna.study.get_all_study_summaries(PG_URL, include_best_trial=False):
            if summary.study_name.startswith(name):
                optuna.delete_study(study_name=summary.study_name, storage=PG_URL)
