"""The commands as a user calls them, and the guards that keep one study's results from mixing with another's."""

import dataclasses
import shutil
import sqlite3

import optuna
import pytest

from weight_tuner.artifacts import members_dir
from weight_tuner.cli import main
from weight_tuner.deploy.testcheck import final_test_evaluation, search_models
from weight_tuner.errors import ConfigError, StudyError
from weight_tuner.paths import model_path, models_dir
from weight_tuner.search.run import create_or_resume, join_study
from weight_tuner.space import StudyConfig
from weight_tuner.storage import check_storage

from conftest import TINY_DOCS, TINY_MODEL
from support import one_line_error


def data_args(cache_dir):
    return ["--sample-docs", str(TINY_DOCS), "--cache-dir", str(cache_dir)]


@pytest.fixture(scope="module")
def made(prepared, tmp_path_factory):
    """A study as `tune` creates it (schemes enqueued, nothing run yet), and its storage."""
    storage = f"sqlite:///{tmp_path_factory.mktemp('made')}/m.db"
    config = StudyConfig(model=dict(TINY_MODEL))
    create_or_resume(storage, "made", prepared, config, dict(config.model))
    return storage, config


@pytest.mark.parametrize("change,message", [
    ("data", "was run on data"),
    ("space", "search space"),
    ("objectives", "objectives"),
    ("evaluation", "evaluation"),
    ("model", "model config"),
])
def test_resume_refuses_a_study_made_differently(made, prepared, change, message):
    storage, config = made
    config = dataclasses.replace(config, model=dict(config.model), evaluation=dict(config.evaluation))
    data = prepared
    if change == "data":
        data = dataclasses.replace(prepared, fingerprint="another-corpus")
    elif change == "space":
        config.space = dataclasses.replace(config.space, nomenclature=(0.5, 100.0))
    elif change == "objectives":
        config.objectives = ["nomenclature_f1", "description_f1"]
    elif change == "evaluation":
        config.set_evaluation(folds=4)
    else:
        config.model["hidden_size"] = 9
    before = len(optuna.load_study(study_name="made", storage=storage).trials)
    with pytest.raises(StudyError, match=message):
        create_or_resume(storage, "made", data, config, dict(config.model))
    assert len(optuna.load_study(study_name="made", storage=storage).trials) == before  # nothing enqueued


def test_resume_with_the_same_settings_enqueues_nothing(made, prepared):
    storage, config = made
    before = len(optuna.load_study(study_name="made", storage=storage).trials)
    _, created = create_or_resume(storage, "made", prepared, config, dict(config.model))
    assert not created and len(optuna.load_study(study_name="made", storage=storage).trials) == before


def test_join_refuses_other_data_and_a_study_not_made_by_tune(made, prepared, tmp_path, monkeypatch):
    from weight_tuner import storage as storage_module

    monkeypatch.setattr(storage_module, "FOREIGN_GRACE", 0.5)  # how long an empty foreign study may be "being set up"
    storage, _ = made
    with pytest.raises(StudyError, match="this worker's data is"):
        join_study(dataclasses.replace(prepared, fingerprint="another-corpus"), storage, "made", 1)
    optuna.create_study(study_name="foreign", storage=storage)
    with pytest.raises(StudyError, match="not created by `weight-tuner tune`"):
        join_study(prepared, storage, "foreign", 1)
    with pytest.raises(StudyError, match="not created by `weight-tuner tune`"):
        create_or_resume(storage, "foreign", prepared, StudyConfig(model=dict(TINY_MODEL)), dict(TINY_MODEL))
    assert optuna.load_study(study_name="foreign", storage=storage).trials == []


@pytest.fixture(scope="module")
def foreign(tmp_path_factory):
    """A study made by plain Optuna, with one finished trial: not ours."""
    url = f"sqlite:///{tmp_path_factory.mktemp('foreign')}/f.db"
    study = optuna.create_study(study_name="other", storage=url, direction="maximize")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    return url


@pytest.mark.parametrize("command", [
    ["export"], ["report"], ["screen"], ["bench", "--no-scaling"], ["worker", "--trials", "2"],
    ["tune", "--trials", "2"], ["predict", "FILE"],
])
def test_a_study_not_made_by_tune_is_one_line_in_every_command(foreign, cache_dir, tmp_path, capsys, command):
    args = list(command)
    if args[0] == "predict":
        text = tmp_path / "in.txt"
        text.write_text("Agaricus bisporus (J.E. Lange) Imbach\n")
        args[1] = str(text)
    if args[0] in ("screen", "bench", "worker", "tune"):
        args += data_args(cache_dir)
    assert main([*args, "--study", "other", "--storage", foreign]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "not created by `weight-tuner tune`" in err[-1], err
    assert [line for line in err if "Traceback" in line] == []
    assert optuna.load_study(study_name="other", storage=foreign).trials[0].state.name == "COMPLETE"


def test_a_sqlite_database_that_is_not_an_optuna_storage_is_refused_untouched(tmp_path, capsys):
    db = tmp_path / "notes.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE notes (body TEXT)")
    con.execute("INSERT INTO notes VALUES ('keep me')")
    con.commit()
    con.close()
    before = db.read_bytes()
    with pytest.raises(StudyError, match="a SQLite database but not an Optuna storage"):
        check_storage(f"sqlite:///{db}")
    assert main(["export", "--study", "x", "--storage", f"sqlite:///{db}"]) == 2
    assert "not an Optuna storage" in capsys.readouterr().err
    assert db.read_bytes() == before


def test_sample_corpus_and_train_commands_on_written_files(tmp_path, capsys):
    out = tmp_path / "corpus"
    assert main(["sample", "-o", str(out), "--docs", "5", "--seed", "3"]) == 0
    files = sorted(out.rglob("*.ann"))
    assert len(files) == 5 and f"wrote 5 documents under {out}" in capsys.readouterr().out
    assert {f.parent for f in files} == {out}  # into the folder given (they went to out/sample/)
    assert main(["corpus", "--data", str(out)]) == 0
    printed = capsys.readouterr().out
    lines = sum(1 for f in files for line in f.read_text().splitlines() if line.strip())
    assert printed.startswith("read 5 files:")
    counts = {parts[0]: int(parts[1]) for parts in (line.split() for line in printed.splitlines()[1:])}
    assert set(counts) == {"Nomenclature", "Description", "Misc"} and 0 < sum(counts.values()) <= lines
    assert "does not exist" in one_line_error(capsys, ["corpus", "--data", str(tmp_path / "nowhere")])


@pytest.mark.parametrize("extra", [[], ["--no-confirm"]])
def test_more_folds_than_the_data_allows_stop_before_the_study_is_created(tmp_path, cache_dir, capsys, extra):
    # The study would store folds: 100 and strand the search's work behind a refused resume.
    db = tmp_path / "f.db"
    argv = ["tune", "--sample-docs", str(TINY_DOCS), "--cache-dir", str(tmp_path / "cache"), "--study", "f",
            "--storage", f"sqlite:///{db}", "--trials", "1", "--folds", "100", *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()  # progress lines (reading the corpus), then the error
    assert [ln for ln in err if "error" in ln] == [err[-1]] and "cannot be cut into 100 folds" in err[-1]
    assert not db.exists() and not (tmp_path / "studies").exists()
    assert not (tmp_path / "cache").exists()  # checked before the features were computed and cached


def _input_file(tmp_path):
    text = tmp_path / "in.txt"
    text.write_text("Agaricus bisporus (J.E. Lange) Imbach\n")
    return text


@pytest.mark.parametrize("case", ["storage under a file", "storage folder not creatable", "worker on other data",
                                  "predict --json onto a folder", "predict -o onto a file"])
def test_every_check_comes_before_the_work(confirmed, tmp_path, capsys, case):
    """A refused command has read no corpus, written no cache and no output, and loaded no model."""
    (tmp_path / "a-file").write_text("x")
    cache = ["--sample-docs", str(TINY_DOCS), "--cache-dir", str(tmp_path / "cache")]
    text = _input_file(tmp_path)
    argv, fragment = {
        "storage under a file": (["tune", "--storage", f"sqlite:///{tmp_path}/a-file/x.db", "--trials", "1", *cache],
                                 "a-file is a file, not a folder"),
        "storage folder not creatable": (["tune", "--storage", "sqlite:////proc/nope/x.db", "--trials", "1", *cache],
                                         "cannot create the folder /proc/nope"),
        "worker on other data": (["worker", "--storage", confirmed, "--study", "shared", "--trials", "3", "--sample-docs",
                                  str(TINY_DOCS + 1), "--cache-dir", str(tmp_path / "cache")], "was run on data"),
        "predict --json onto a folder": (["predict", "--study", "shared", "--storage", confirmed, str(text), "--json",
                                          str(tmp_path)], "it is a directory"),
        "predict -o onto a file": (["predict", "--study", "shared", "--storage", confirmed, str(text), "-o",
                                    str(tmp_path / "a-file")], "a-file is not a directory"),
    }[case]
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(argv) == 2
    out, err = capsys.readouterr()
    errors = [ln for ln in err.splitlines() if "error" in ln]
    assert len(errors) == 1 and fragment in errors[0], err
    assert "model:" not in out  # predict refused before it loaded the model
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no cache, no output beside the input


def test_a_file_with_no_lines_is_listed_in_predicts_json(confirmed, tmp_path, capsys):
    import json

    empty, text = tmp_path / "empty.txt", _input_file(tmp_path)
    empty.write_text("\n\n")
    assert main(["predict", "--study", "shared", "--storage", confirmed, str(text), str(empty), "-o", str(tmp_path / "o"),
                 "--json", str(tmp_path / "p.json")]) == 0
    files = json.loads((tmp_path / "p.json").read_text())["files"]
    assert files[str(empty)] == {"output": None, "lines": 0, "skipped": "no lines to label"}
    assert files[str(text)]["lines"] == 1 and "skipped (no lines to label)" in capsys.readouterr().out


def test_usage_errors_are_one_line_exit_2(capsys):
    for argv, fragment in ((["bench", "--seeds", "1,x"], "--seeds"), (["tune", "--trials", "0"], "--trials"),
                           (["tune", "--folds", "1"], "--folds"), (["sample", "-o", "x", "--docs", "-2"], "--docs"),
                           (["tune", "--trial-timeout", "nan"], "--trial-timeout"),
                           (["tune", "--study", "a/../../x"], "--study"), (["export", "--study", ".."], "--study")):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and fragment in err[0] and err[0].startswith("weight-tuner "), err


def test_the_objects_tensorflows_import_leaves_are_frozen_once():
    """Optuna collects garbage after every trial; without the freeze each collection scans TensorFlow's
    400,000 objects. Only the first import freezes: later commands in one process leave the rest to the collector.
    (Issue 44, 10: this test once checked a fake of gc.freeze; now a new process reports the real count.)"""
    import subprocess
    import sys

    code = ("import gc; from weight_tuner import logs; logs.import_tensorflow(); first = gc.get_freeze_count(); "
            "kept = [[] for _ in range(5000)]; logs.import_tensorflow(); print(first, gc.get_freeze_count())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    first, again = (int(n) for n in out.stdout.split())
    assert first > 100_000  # TensorFlow's objects, out of every later collection
    assert again == first  # the second import froze nothing more (the 5,000 lists stay collectable)


@pytest.fixture(scope="module")
def confirmed(shared_study):
    """The suite's shared study (made by tune: search, confirmation, test check, refits): its storage URL."""
    return shared_study.url


def test_screen_command_enqueues_weights_into_the_study(confirmed, cache_dir, tmp_path, capsys):
    db = tmp_path / "copy.db"
    shutil.copy(confirmed.removeprefix("sqlite:///"), db)
    url = f"sqlite:///{db}"
    before = len(optuna.load_study(study_name="shared", storage=url).trials)
    assert main(["screen", "--study", "shared", "--storage", url, "--samples", "200", "--top-k", "2",
                 *data_args(cache_dir)]) == 0
    assert "enqueued 2 trials" in capsys.readouterr().out
    waiting = [t for t in optuna.load_study(study_name="shared", storage=url).trials[before:]]
    assert [t.state.name for t in waiting] == ["WAITING", "WAITING"]
    assert [t.user_attrs["scheme"] for t in waiting] == ["screen_top1", "screen_top2"]


def test_predict_with_a_study_uses_its_recommended_model(shared_study, tmp_path, capsys):
    import json

    copy = shared_study.copy(tmp_path / "copy")  # a model of it is removed below
    corpus = tmp_path / "in"
    assert main(["sample", "-o", str(corpus), "--docs", "3", "--seed", "9"]) == 0
    files = [str(p) for p in sorted(corpus.rglob("*.ann"))]
    out = tmp_path / "out"
    assert main(["predict", "--study", "shared", "--storage", copy.url, *files, "-o", str(out),
                 "--json", str(tmp_path / "p.json")]) == 0
    result = json.loads((tmp_path / "p.json").read_text())
    assert len(list(out.glob("*.pred.txt.ann"))) == 3
    # the overall score is the score of every file's lines together, as each file's entry counts them
    per_file = [e["stats"] for e in result["files"].values()]
    assert result["stats"]["lines"] == sum(s["lines"] for s in per_file) == result["throughput"]["lines"]
    assert result["stats"]["Misc_support"] == sum(s["Misc_support"] for s in per_file)
    rec = copy.study().user_attrs["recommendation"]
    # the recommended trial's own model is what predict --use single loads: remove it and it says so
    model_path(models_dir(copy.url, "shared"), rec["trial"]).unlink()
    assert main(["predict", "--study", "shared", "--storage", copy.url, "--use", "single", files[0], "-o",
                 str(out)]) == 2
    assert f"model of trial {rec['trial']} is not at" in capsys.readouterr().err


def test_the_test_check_reads_models_and_the_step_before_it_trains_a_missing_one(confirmed, prepared, tmp_path):
    db = tmp_path / "elsewhere.db"  # the study without its models folder, as on another machine
    shutil.copy(confirmed.removeprefix("sqlite:///"), db)
    url = f"sqlite:///{db}"
    study = optuna.load_study(study_name="shared", storage=url)
    kept, rec = study.user_attrs["test_stats"], study.user_attrs["recommendation"]
    assert not models_dir(url, "shared").exists()
    with pytest.raises(StudyError, match="is not at"):  # evaluation writes no model
        final_test_evaluation(study, prepared, url)
    assert not models_dir(url, "shared").exists() and study.user_attrs["test_stats"] == kept
    search_models(study, prepared, url)
    number = kept["unweighted"]["trial"]
    assert model_path(models_dir(url, "shared"), number).exists()  # trained, and saved for predict --study
    # the members are read from the folder given (the shared one), never from a path another machine recorded
    result = final_test_evaluation(study, prepared, url, members_dir(confirmed, "shared"))
    # the same config, seed and data: the retrained model scores as the original did
    assert result["unweighted"]["stats"]["important_f1"] == pytest.approx(
        kept["unweighted"]["stats"]["important_f1"], abs=1e-6)
    assert study.user_attrs["recommendation"] == rec  # neither step touched the decision


def test_a_scheme_list_without_unweighted_is_refused_before_anything_runs():
    with pytest.raises(ConfigError, match="'unweighted' must be one of them"):
        StudyConfig(model=dict(TINY_MODEL), schemes=["inverse_frequency"]).check_schemes()


def test_a_decision_with_no_trial_behind_it_never_borrows_another_trials_model(confirmed, tmp_path):
    """A study whose search had no unweighted trial (older studies could leave it out): export and predict
    say so instead of handing out the best weighted trial's config or model."""
    from weight_tuner.deploy.loaded import recommended_model
    from weight_tuner.export import build_export
    from weight_tuner.storage import store_recommendation, stored_recommendation

    db = tmp_path / "c.db"
    shutil.copy(confirmed.removeprefix("sqlite:///"), db)
    url = f"sqlite:///{db}"
    study = optuna.load_study(study_name="shared", storage=url)
    no_trial = stored_recommendation(study).replace(decision="no_weights", class_weights=None, trial=None)
    store_recommendation(study, no_trial)
    export = build_export(url, "shared")
    assert export["trial_number"] is None and export["class_weights"] is None
    assert export["model_config"]["class_weights"] is None and "no unweighted trial" in export["val_stats_over"]
    with pytest.raises(StudyError, match="no single model"):
        recommended_model(url, "shared", use="single")


def test_ctrl_c_stops_the_dashboard_as_a_server_stops(tmp_path):
    """Ctrl-C is how a dashboard ends: exit 0 and no word of resuming a job (make would report Error 130)."""
    import signal
    import socket
    import subprocess
    import sys
    import time

    import optuna

    url = f"sqlite:///{tmp_path}/d.db"
    optuna.create_study(study_name="d", storage=url)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "weight_tuner.cli", "dashboard", "--storage", url, "--port",
                             str(port)], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "dashboard stopped" in err and "resume" not in err
