"""The study: warm start, resume without replay, pruning, test evaluation, export and report."""

import json
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from weight_tuner.cli import main
from weight_tuner.schemes import GUIDE_SCHEMES, count_schemes, group_schemes, warm_start_schemes
from weight_tuner.search.run import tune
from weight_tuner.space import SearchSpace, StudyConfig
from weight_tuner.storage import load_existing_study

from conftest import TINY_DOCS, TINY_MODEL
from support import one_line_error


@pytest.fixture(scope="module")
def tiny_study(shared_study):
    """The suite's shared study: 4 trials of the tiny model, confirmed on 2 units, tested, refitted."""
    return shared_study.url, shared_study.study()


def test_study_persists_finished_trials_and_schemes_run_first(tiny_study, prepared):
    storage, _ = tiny_study
    study = load_existing_study(storage, "shared")
    ran = [t for t in study.trials if t.state != TrialState.WAITING]
    assert len(ran) == 4 and all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in ran)
    named = warm_start_schemes(prepared.class_counts["train"])
    groups = group_schemes(named, prepared.class_counts["train"])
    assert [t.user_attrs["scheme"] for t in ran] == [g[0] for g in groups][:4]
    all_schemes = [name for t in study.trials for name in t.user_attrs["schemes"]]
    assert sorted(all_schemes) == sorted(named)  # each named once, each distinct point enqueued once
    assert ["inverse_frequency", "balanced"] in groups  # the same ratios: one point
    first = ran[0]
    assert first.user_attrs["class_weights"] == {"Nomenclature": 1.0, "Description": 1.0, "Misc": 1.0}
    a = first.user_attrs
    assert a["val_important_f1"] == first.value == pytest.approx((a["val_Nomenclature_f1"] + a["val_Description_f1"]) / 2)
    assert a["val_Misc_support"] == prepared.class_counts["val"]["Misc"] and a["val_Description_loss"] > 0
    assert a["epochs_run"] == TINY_MODEL["epochs"] and a["seconds"] > 0
    assert study.metric_names == ["val_important_f1"]
    assert study.user_attrs["data_fingerprint"] == prepared.fingerprint
    assert study.user_attrs["search_space"]["version"] == 1
    assert set(study.user_attrs["class_counts"]) == {"train", "val", "test"}
    assert study.user_attrs["library_versions"]["optuna"] == optuna.__version__


def test_guide_scheme_trains_with_its_weights_as_given(tiny_study):
    storage, _ = tiny_study
    study = load_existing_study(storage, "shared")
    guide = [t for t in study.trials if t.user_attrs["scheme"] == "guide_recommended_100_10_0.1"][0]
    assert guide.user_attrs["class_weights"] == GUIDE_SCHEMES["guide_recommended_100_10_0.1"]
    assert guide.params == {"w_Nomenclature": pytest.approx(1000.0), "w_Description": pytest.approx(100.0)}


def test_test_split_scores_the_recommended_and_the_unweighted_models(tiny_study, prepared):
    from weight_tuner.paths import model_path, models_dir
    from weight_tuner.train import evaluate
    from weight_tuner.bundles import load_bundle

    storage, study = tiny_study
    attrs = load_existing_study(storage, "shared").user_attrs
    test, rec = attrs["test_stats"], attrs["recommendation"]
    assert test["decision"] == rec["decision"]
    for name in ("recommended", "unweighted"):
        assert test[name]["stats"]["lines"] == prepared.splits["test"].n
    assert test["unweighted"]["trial"] == 0
    # the recommended row is the recommended trial's model, or no weights' own when no weights won
    assert test["recommended"]["trial"] == (rec["trial"] if rec["decision"] == "weights" else 0)
    # the stored scores are those of the saved unweighted model on the test split
    model, _, cfg = load_bundle(model_path(models_dir(storage, "shared"), 0))
    again = evaluate(model, prepared.splits["test"], cfg)
    assert test["unweighted"]["stats"]["important_f1"] == pytest.approx(again["important_f1"], abs=1e-6)


def test_export_parses_and_round_trips_into_train(tiny_study, tmp_path, cache_dir, capsys):
    storage, study = tiny_study
    out = tmp_path / "best.json"
    assert main(["export", "--study", "shared", "--storage", storage, "-o", str(out)]) == 0
    payload = json.loads(out.read_text())
    rec = load_existing_study(storage, "shared").user_attrs["recommendation"]
    shape = payload["recommendation"]
    assert shape["decision"] in ("weights", "no_weights", "thresholds") and shape["decision"] == rec["decision"]
    no_weights = shape["decision"] == "no_weights"
    assert (shape["diff_vs_unweighted"] is None) == no_weights  # no weights against itself says nothing
    compared = shape["closest_challenger"]["diff_vs_unweighted"] if no_weights else shape["diff_vs_unweighted"]
    assert set(compared) == {"mean", "ci_low", "ci_high"}  # the challenger speaks for no weights
    assert shape["sentence"].startswith("Use ") and "held-out fold" in shape["scores_over"]
    assert (shape["n_units"], shape["folds"], shape["repeats"]) == (2, 2, 1)
    assert [c["candidate"] for c in shape["candidates"]][:2] == ["unweighted", "thresholds"]
    assert payload["class_weights"] == shape["class_weights"]
    assert (payload["class_weights"] is None) == (shape["decision"] != "weights")
    assert payload["trial_number"] == rec["trial"]
    assert payload["model_config"]["class_weights"] == payload["class_weights"]
    assert "unweighted" in payload["baselines"] and payload["data_fingerprint"]
    # One key, one scale: class_weights are as trained everywhere, weights_given as given.
    study = load_existing_study(storage, "shared")
    ran = [row for row in payload["baselines"].values() if row["state"] == "COMPLETE"]
    for row in ran:
        trial = next(t for t in study.trials if t.number == row["trial"])
        assert row["class_weights"] == trial.user_attrs["class_weights_trained"]
        assert row["weights_given"] == trial.user_attrs["class_weights"]
    rescaled = [row for row in ran if row["weights_given"]["Misc"] != row["class_weights"]["Misc"]]
    assert rescaled  # e.g. the guide's 100/10/0.1: as given and as trained differ, under two keys
    assert set(payload["weight_scales"]) == {"class_weights", "weights_given"}
    cfg = tmp_path / "model.json"
    cfg.write_text(json.dumps(dict(TINY_MODEL, epochs=1)))
    stats = tmp_path / "stats.json"
    rc = main(["train", "--weights", str(out), "--config", str(cfg), "--sample-docs", str(TINY_DOCS),
               "--cache-dir", str(cache_dir), "--out", str(stats)])
    assert rc == 0
    assert json.loads(stats.read_text())["model_config"]["class_weights"] == payload["class_weights"]


def test_report_prints_table_best_first_and_writes_plots(tiny_study, capsys):
    storage, _ = tiny_study
    assert main(["report", "--study", "shared", "--storage", storage]) == 0
    out = capsys.readouterr().out
    assert "unweighted" in out and "val_important_f1" in out
    assert out.startswith("Recommendation: Use")  # the decision first, the trials table last
    assert "vs no weights" in out and "test split (scored once" in out and "95% interval [" in out
    assert "e+0" not in out  # plain decimals: 10000, not 1e+04
    # issue 45, 5: the terminal's tables fit 100 columns (they were 162 and 235); -v prints every column
    tables = out.split("test split (scored once, after the decision):")[1]
    assert max(len(line) for line in tables.splitlines() if not line.startswith("wrote ")) <= 100
    assert "weights N / D / M" in tables and "Nomenclature weight (as trained)" not in tables
    assert main(["report", "--study", "shared", "--storage", storage, "--no-plots", "-v"]) == 0
    wide = capsys.readouterr().out
    assert "Nomenclature weight (as trained)" in wide and "Nomenclature lines" in wide
    page = (Path(storage[len("sqlite:///"):]).parent / "shared" / "report.html").read_text()
    for figure in ("paired_differences", "history", "importances", "weight_map", "tradeoff", "confusion_deployed"):
        assert f'id="figure-{figure}"' in page and "data:image/png;base64," in page
    assert 'id="verdict"' in page and 'model_config["class_weights"] = ' in page and 'id="test"' in page


def test_a_scheme_outside_the_space_runs_but_is_no_point_of_it(tiny_study, tmp_path):
    from weight_tuner.storage import trial_config

    storage, _ = tiny_study
    study = load_existing_study(storage, "shared")
    space = SearchSpace.from_dict(study.user_attrs["search_space"])
    outside = [t for t in study.trials if t.user_attrs.get("outside_space")]
    assert [t.user_attrs["scheme"] for t in outside] == ["guide_critical_100_20_0.01"]  # ratios 10000 and 2000
    critical = outside[0]
    assert critical.state == TrialState.COMPLETE and critical.params == {}
    assert trial_config(study, critical).class_weights == GUIDE_SCHEMES["guide_critical_100_20_0.01"]
    for t in study.trials:  # every weight parameter the dashboard plots lies within the stored range
        for key, value in t.params.items():
            low, high = space.nomenclature if key == "w_Nomenclature" else space.description
            assert low <= value <= high, (t.number, key, value)
    assert "outside the search space" in _note(study, critical)


def _note(study, trial) -> str:
    from optuna_dashboard._note import get_note_from_system_attrs

    return get_note_from_system_attrs(study._storage.get_study_system_attrs(study._study_id), trial._trial_id)["body"]


def test_every_trial_has_a_note_with_its_weights_three_ways(tiny_study):
    storage, _ = tiny_study
    study = load_existing_study(storage, "shared")
    guide = [t for t in study.trials if t.user_attrs.get("scheme") == "guide_recommended_100_10_0.1"][0]
    note = _note(study, guide)
    assert "(as given): Nomenclature 100, Description 10, Misc 0.1" in note
    assert "w_Nomenclature 1000, w_Description 100" in note  # what the dashboard's parameter panel shows
    assert "**trained**" in note and "| Nomenclature |" in note


def test_resume_counts_total_trials_and_never_replays_params(prepared, tmp_path):
    storage = f"sqlite:///{tmp_path}/r.db"
    cfg = StudyConfig(model=dict(TINY_MODEL, epochs=1), schemes=["unweighted"])
    tune(prepared, storage, "resume", 2, cfg)
    study = tune(prepared, storage, "resume", 4, cfg)
    done = study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    assert len(done) == 4
    params = [tuple(sorted(t.params.items())) for t in done]
    assert len(set(params)) == 4, params
    again = tune(prepared, storage, "resume", 4, cfg)  # already complete: runs nothing
    assert len(again.trials) == 4
    assert sum(t.user_attrs["scheme"] == "unweighted" for t in again.trials) == 1


def test_pruning_stops_a_trial_early(prepared, tmp_path):
    storage = f"sqlite:///{tmp_path}/p.db"
    # A threshold no trial reaches: every trial is pruned at its first report.
    cfg = StudyConfig(model=dict(TINY_MODEL, epochs=4), schemes=["unweighted"],
                      pruner={"type": "threshold", "lower": 2.0})
    study = tune(prepared, storage, "prune", 2, cfg)
    assert [t.state for t in study.trials] == [TrialState.PRUNED, TrialState.PRUNED]
    assert all(t.user_attrs["epochs_run"] == 1 for t in study.trials)
    assert all(t.intermediate_values.keys() == {1} for t in study.trials)
    for t in study.trials:  # a pruned trial says why, when, and how it scored then
        note = _note(study, t)
        assert "Pruned by ThresholdPruner** after epoch 1" in note
        assert f"important_f1 {t.intermediate_values[1]:.4f}" in note and "Nomenclature F1" in note


def test_export_errors_name_the_problem(prepared, tmp_path, capsys):
    storage = f"sqlite:///{tmp_path}/e.db"
    empty = optuna.create_study(study_name="empty", storage=storage)
    empty.set_user_attr("search_space", SearchSpace().to_dict())  # as tune leaves it before any trial ends
    empty.set_user_attr("model_config", {})
    out = tmp_path / "x.json"
    assert "has no completed trial" in one_line_error(capsys, ["export", "--study", "empty", "--storage", storage,
                                                               "-o", str(out)])
    err = one_line_error(capsys, ["export", "--study", "nope", "--storage", storage, "-o", str(out)])
    assert "study 'nope' not found" in err and "existing studies: empty" in err
    assert "does not exist" in one_line_error(capsys, ["export", "--study", "x", "--storage",
                                                       f"sqlite:///{tmp_path}/missing.db"])
    assert not out.exists() and not (tmp_path / "missing.db").exists()


def test_search_space_includes_unweighted_point_and_schemes():
    space = SearchSpace()
    assert space.params_for({"Nomenclature": 100, "Description": 10, "Misc": 0.1}) == {
        "w_Nomenclature": pytest.approx(1000), "w_Description": pytest.approx(100)}
    with pytest.raises(Exception, match="include 1"):
        SearchSpace(nomenclature=(2.0, 10.0))
    counts = {"Nomenclature": 10, "Description": 40, "Misc": 200}
    derived = count_schemes(counts)
    assert derived["inverse_frequency"] == {"Nomenclature": 20.0, "Description": 5.0, "Misc": 1.0}
    assert derived["balanced"]["Nomenclature"] == pytest.approx(250 / 30)
    assert derived["effective_number_0.9999"]["Misc"] == pytest.approx(1e-4 / (1 - 0.9999 ** 200))
    big = count_schemes({"Nomenclature": 7425, "Description": 27337, "Misc": 129500})  # SKOL's counts
    for beta in ("0.9999", "0.99999"):  # not uniform there, unlike beta 0.99 / 0.999
        w = big[f"effective_number_{beta}"]
        assert w["Nomenclature"] / w["Misc"] > 1.5
    assert derived["sqrt_inverse_frequency"]["Description"] == pytest.approx(5 ** 0.5)


def test_study_config_file_widens_the_space_and_rejects_typos(tmp_path):
    good = tmp_path / "wide.toml"
    good.write_text('schemes = ["unweighted"]\n[space]\nmisc = [0.01, 10.0]\nepochs = [2, 4]\n'
                    'window_size = [10, 15]\n[model]\nhidden_size = 16\n[pruner]\ntype = "median"\n')
    cfg = StudyConfig.load(good)
    assert cfg.space.misc == (0.01, 10.0) and cfg.model["hidden_size"] == 16
    trial = optuna.trial.FixedTrial({"w_Nomenclature": 3.0, "w_Description": 2.0, "w_Misc": 0.5,
                                     "epochs": 3, "window_size": 10})
    config = cfg.space.suggest(trial, cfg.model)
    assert config.class_weights == {"Nomenclature": 3.0, "Description": 2.0, "Misc": 0.5}
    assert config.epochs == 3 and config.window_size == 10
    bad = tmp_path / "bad.toml"
    bad.write_text("[space]\nnomenclatur = [1, 2]\n")
    with pytest.raises(Exception, match="unknown key 'nomenclatur'"):
        StudyConfig.load(bad)


def test_only_the_best_and_the_unweighted_models_are_kept(tiny_study):
    storage, study = tiny_study
    models = Path(storage[len("sqlite:///"):]).parent / "shared" / "models"
    kept = sorted(int(p.stem.split("-")[1]) for p in models.glob("trial-*.keras"))
    unweighted = [t.number for t in study.trials if t.user_attrs.get("scheme") == "unweighted"]
    assert kept == sorted({study.best_trial.number, *unweighted})


def test_a_tie_keeps_the_earlier_best_model(prepared, tmp_path):
    from weight_tuner.config import ModelConfig
    from weight_tuner.model import build_model
    from weight_tuner.paths import model_path
    from weight_tuner.search.objective import Objective

    study = optuna.create_study(direction="maximize")
    dist = {"w_Nomenclature": optuna.distributions.FloatDistribution(0.1, 1000, log=True)}
    study.add_trial(optuna.trial.create_trial(params={"w_Nomenclature": 2.0}, distributions=dist, value=0.5,
                                              user_attrs={"val_important_f1": 0.5, "scheme": "search"}))
    earlier = model_path(tmp_path, 0)
    earlier.write_bytes(b"model of trial 0")
    cfg = ModelConfig.from_dict({"hidden_size": 2, "num_layers": 1})
    objective = Objective(prepared, SearchSpace(), cfg, tmp_path)
    trial = study.ask()
    trial.set_user_attr("scheme", "search")
    objective._keep_model(trial, build_model(prepared.featurizer.n_features, cfg), cfg, 0.5)  # a tie
    assert earlier.exists() and not model_path(tmp_path, trial.number).exists()
    objective._keep_model(trial, build_model(prepared.featurizer.n_features, cfg), cfg, 0.6)  # better
    assert model_path(tmp_path, trial.number).exists() and not earlier.exists()
