"""The deployed model: the confirmation's models kept, the refits, their calibration, and prior adaptation."""

import csv
import dataclasses
import json
import shutil

import numpy as np
import pytest

from weight_tuner.cli import main
from weight_tuner.config import CLASSES
from weight_tuner.confirm.deployed import deployed_calibration
from weight_tuner.posthoc import Calibration, adapt_priors, apply_calibration, fit_calibration, mean_calibration
from weight_tuner.storage import load_existing_study, store_recommendation, stored_recommendation



@pytest.fixture(scope="module")
def deployed_study(shared_study):
    """The suite's shared study: ``tune --refits 2`` with a tiny model on 2 confirmation units, so 2 members;
    its folder, storage URL and 3 new documents to label."""
    return shared_study.root, shared_study.url, shared_study.corpus


def _csv_probs(folder):
    out = {}
    for path in sorted(folder.rglob("*.probs.csv")):
        with open(path, newline="") as fh:
            out[path.name] = np.array([[float(r[f"p_{c}"]) for c in CLASSES] for r in csv.DictReader(fh)])
    return out


@pytest.mark.parametrize("use, fragment", [(None, "model: 2 refits of"), ("ensemble", "model: ensemble of 2 confirmation")])
def test_predict_study_averages_the_deployed_models_calibrated(deployed_study, tmp_path, capsys, use, fragment):
    """The default (the refits) and the ensemble: each model's probabilities calibrated, then averaged."""
    from weight_tuner.deploy.loaded import recommended_model

    d, storage, corpus = deployed_study
    rec = load_existing_study(storage, "shared").user_attrs["recommendation"]
    members = rec["deployed"]["ensemble"]["members"]
    assert rec["deployed"]["default"] == "refit" and sorted(m["unit"] for m in members) == ["r0f0", "r0f1"]
    deployed = recommended_model(storage, "shared", use=use)
    assert deployed.calibration is not None and deployed.calibration.temperature != 1.0
    out = tmp_path / "shared"
    assert main(["predict", "--study", "shared", "--storage", storage, str(corpus), "-o", str(out), "--probs",
                 "--json", str(tmp_path / "r.json")] + (["--use", use] if use else [])) == 0
    out_text = capsys.readouterr().out
    assert fragment in out_text
    assert "trained on the generated sample corpus (synthetic text, a demonstration)" in out_text  # issue 45, 12
    assert json.loads((tmp_path / "r.json").read_text())["models"] == 2
    averaged = _csv_probs(out)
    # Each model alone, through the same command, then calibrated: the deployed rows are their mean.
    singles = []
    for k, bundle in enumerate(deployed.bundles):
        one = tmp_path / f"one{k}"
        assert main(["predict", "--model", str(bundle), str(corpus), "-o", str(one), "--probs"]) == 0
        singles.append({n: apply_calibration(p, deployed.calibration) for n, p in _csv_probs(one).items()})
    first = next(iter(averaged))
    assert len(singles) == 2 and not np.allclose(singles[0][first], singles[1][first], atol=1e-3)
    for name, probs in averaged.items():
        np.testing.assert_allclose(probs, (singles[0][name] + singles[1][name]) / 2, atol=1e-4)
        assert not np.allclose(probs, (_csv_probs(tmp_path / "one0")[name] + _csv_probs(tmp_path / "one1")[name]) / 2,
                               atol=1e-4)  # uncalibrated, the mean differs: the calibration reached predict


def test_the_study_note_and_decision_name_the_refits_tune_made(deployed_study):
    from optuna_dashboard._note import get_note_from_system_attrs

    _, storage, _ = deployed_study
    study = load_existing_study(storage, "shared")
    note = get_note_from_system_attrs(study._storage.get_study_system_attrs(study._study_id), None)["body"]
    assert "Refit, the mean of 2 models on every non-test line" in note and "Also kept (predict --use ensemble|single)" in note
    assert "calibrated first, fitted on" in note and "divided by a temperature of" in note
    assert study.user_attrs["decision"].endswith("predict --study uses the refit model.")


def test_the_deployed_calibration_is_the_members_fits_averaged(deployed_study):
    d, storage, _ = deployed_study
    deployed = load_existing_study(storage, "shared").user_attrs["recommendation"]["deployed"]
    fits = [Calibration.from_dict(m["calibration"]) for m in deployed["ensemble"]["members"]]
    assert len(fits) == 2 and fits[0] != fits[1]
    assert Calibration.from_dict(deployed["calibration"]) == mean_calibration(fits)
    members = deployed["ensemble"]["members"]
    assert deployed_calibration(members, "thresholds") is None  # its multipliers were fitted uncalibrated
    assert deployed_calibration([members[0], dict(members[1], calibration=None)], "no_weights") is None


def test_calibration_recovers_a_known_temperature_and_bias():
    """Probabilities made over-confident (logits x 3) and shifted toward class 0: the fit undoes both."""
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(20_000, 3)) * 1.5
    truth = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    y = (truth.cumsum(axis=1) > rng.random((len(truth), 1))).argmax(axis=1)  # labels drawn from the truth
    skewed = np.exp(3 * logits + [1.0, 0.0, 0.0])
    skewed /= skewed.sum(axis=1, keepdims=True)
    fit = fit_calibration(skewed, y)
    assert fit.temperature == pytest.approx(3.0, rel=0.05)
    np.testing.assert_allclose(np.array(fit.biases) - fit.biases[0], [0, 1 / 3, 1 / 3], atol=0.05)
    np.testing.assert_allclose(apply_calibration(skewed, fit), truth, atol=0.02)
    same = fit_calibration(truth, y)  # already calibrated: left (nearly) alone
    assert same.temperature == pytest.approx(1.0, abs=0.05) and np.abs(same.biases).max() < 0.05
    assert fit_calibration(skewed[y != 2], y[y != 2]) is None  # a class absent: no honest bias for it
    assert apply_calibration(skewed, None) is skewed


def test_refit_single_and_export_name_the_deployed_model(deployed_study, tmp_path, capsys):
    d, storage, corpus = deployed_study
    study = load_existing_study(storage, "shared")
    refit = study.user_attrs["recommendation"]["deployed"]["refit"]
    counts = study.user_attrs["class_counts"]
    assert refit["train_lines"] == sum(counts["train"].values()) + sum(counts["val"].values())
    assert study.user_attrs["test_stats"]["ensemble"]["members"] == 2  # the 2 members scored on the test split
    deployed = study.user_attrs["recommendation"]["deployed"]
    assert refit["models"] == 2 and len(list((d / "shared" / "models").glob("refit*.keras"))) == 2
    for use, fragment in (("refit", f"model: 2 refits of {deployed['candidate']} on {refit['train_lines']}"),
                          ("single", f"model: the search's model of trial {deployed['single']['trial']}")):
        assert main(["predict", "--study", "shared", "--storage", storage, "--use", use, str(corpus),
                     "-o", str(tmp_path / use)]) == 0
        assert fragment in capsys.readouterr().out
    out = tmp_path / "e.json"
    assert main(["export", "--study", "shared", "--storage", storage, "-o", str(out)]) == 0
    deployed = json.loads(out.read_text())["recommendation"]["deployed_model"]
    assert deployed["default"] == "refit" and [m["unit"] for m in deployed["ensemble"]["members"]] == ["r0f0", "r0f1"]
    assert deployed["refit"]["train_lines"] == refit["train_lines"] and deployed["refit"]["models"] == 2
    assert deployed["calibration"]["temperature"] == study.user_attrs["recommendation"]["deployed"]["calibration"][
        "temperature"]


def test_missing_member_models_fail_with_one_line(shared_study, tmp_path, capsys):
    copy = shared_study.copy(tmp_path / "copy")
    shutil.rmtree(copy.folder / "models" / "members", ignore_errors=True)  # the unpacked copies
    shutil.rmtree(copy.folder / "members")
    capsys.readouterr()
    # Issue 44, 7: the folder recorded when the members were saved (the original's, still there) is another
    # machine's in general: predict reads its own members folder, or the one it is given, never that one.
    assert main(["predict", "--study", "shared", "--storage", copy.url, "--use", "ensemble", str(shared_study.corpus),
                 "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"is not in {copy.folder / 'members'}" in err[0], err
    assert str(shared_study.folder / "members") in err[0] and "--members" in err[0]  # where it was saved, said
    assert main(["predict", "--study", "shared", "--storage", copy.url, "--use", "ensemble", "--members",
                 str(tmp_path / "gone"), str(shared_study.corpus), "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not in" in err[0] and "--members" in err[0]
    assert not (tmp_path / "o").exists()
    # Where the folder moved, --members finds it.
    moved = tmp_path / "moved"
    shutil.copytree(shared_study.folder / "members", moved)
    assert main(["predict", "--study", "shared", "--storage", copy.url, "--use", "ensemble", "--members", str(moved),
                 str(shared_study.corpus), "-o", str(tmp_path / "o")]) == 0


def test_a_process_whose_members_folder_is_not_the_studys_stops_before_any_work(shared_study, tmp_path, capsys):
    """Issue 44, 7: a worker (or a second tune) in another directory or on another machine kept its confirmation
    models where tune could not find them, and tune failed after its decision, on every rerun."""
    copy = shared_study.copy(tmp_path / "copy")
    elsewhere, cache = tmp_path / "elsewhere", tmp_path / "new-cache"
    args = copy.tune_args()
    args[args.index("--cache-dir") + 1] = str(cache)
    worker = ["worker", *args[args.index("--sample-docs"):args.index("--sample-docs") + 2], "--cache-dir", str(cache),
              "--study", "shared", "--storage", copy.url, "--trials", "4"]
    capsys.readouterr()
    for command in (args, worker):
        assert main([*command, "--members", str(elsewhere)]) == 2, command[0]
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and (f"weight-tuner: error: --members {elsewhere}: not the folder study 'shared' "
                                  "keeps its confirmation models in") in err[0], err
    assert not cache.exists()  # refused before the corpus was read and its features cached
    assert not list(elsewhere.glob("*"))
    # The study's own folder, moved whole (its marker with it), is the study's wherever it is.
    shutil.copytree(copy.folder / "members", elsewhere, dirs_exist_ok=True)
    from weight_tuner.artifacts import check_members_folder

    check_members_folder(copy.study().user_attrs, "shared", elsewhere)


def test_the_refits_study_is_named_for_the_folder_it_saves_to(tmp_path, monkeypatch):
    """Issue 44, 7: hashed from relative paths, two tune of one PostgreSQL study in two directories (or on two
    machines) shared one refits study, and each waited for refits saved in the other's folder."""
    from weight_tuner.config import ModelConfig
    from weight_tuner.deploy.refits import refit_paths, refit_study
    from weight_tuner.paths import models_dir

    config = ModelConfig()
    relative = refit_paths(models_dir("postgresql://u@h/db", "s"), 2)
    names = {}
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        monkeypatch.chdir(tmp_path / folder)
        names[folder], where = refit_study("s", config, relative)
        assert where["paths"][0] == str(tmp_path / folder / "studies" / "s" / "models" / "refit.keras")
    assert names["a"] != names["b"] and all(n.startswith("s.refit-") for n in names.values())
    # The same folder, however it is written, is the same study; another configuration is another.
    absolute = [tmp_path / "b" / p for p in relative]
    assert refit_study("s", config, absolute)[0] == names["b"]
    assert refit_study("s", config.replace(seed=1), absolute)[0] != names["b"]


def test_a_rerun_keeps_the_refits_of_the_same_configuration(shared_study, tmp_path, capsys):
    copy = shared_study.copy(tmp_path / "copy")
    models = copy.folder / "models"

    def refits():
        entry = load_existing_study(copy.url, "shared").user_attrs["recommendation"]["deployed"]
        return entry["default"], entry["refit"], {p.name: p.stat().st_mtime_ns for p in models.glob("refit*.keras")}

    before = refits()
    capsys.readouterr()
    assert main(copy.tune_args()) == 0
    assert refits() == before  # the finished study: nothing trained again, the entry kept
    # the rerun still says what the deployed model scored on the test split (issue 45, 3)
    n = before[1]["models"]
    assert (f"Deployed model's test important_f1: {before[1]['test_important_f1']:.4f} ({n} refit models of "
            in capsys.readouterr().out)
    assert main(copy.tune_args(refits="1")) == 0
    default, entry, stamps = refits()
    assert default == "refit" and entry["models"] == 1
    assert stamps["refit.keras"] != before[2]["refit.keras"]  # another count: trained again


def test_refits_finished_before_a_kill_are_kept_by_the_rerun(shared_study, tmp_path, capsys):
    """Issue 44, 8: after kill -9 during the refits, the rerun trained again the refits that had finished."""
    copy = shared_study.copy(tmp_path / "copy")
    models = copy.folder / "models"

    def killed_during_refits():  # the refit step never published: the recommendation has no refit entry
        study = load_existing_study(copy.url, "shared")
        rec = stored_recommendation(study)
        store_recommendation(study, rec.replace(deployed=dataclasses.replace(rec.deployed, refit=None,
                                                                             default="ensemble")))

    def stamps():
        return {p.name: p.stat().st_mtime_ns for p in models.glob("refit*.keras")}

    killed_during_refits()
    assert main(copy.tune_args()) == 0  # this copy's refits study is new (another folder): both trained here
    trained = stamps()
    killed_during_refits()
    (models / "refit-1.keras").write_bytes(b"cut")  # one refit's file damaged: that one alone is trained again
    capsys.readouterr()
    assert main(copy.tune_args()) == 0
    again = stamps()
    assert again["refit.keras"] == trained["refit.keras"] and again["refit-1.keras"] != trained["refit-1.keras"]
    entry = load_existing_study(copy.url, "shared").user_attrs["recommendation"]["deployed"]["refit"]
    assert entry["models"] == 2 and "refit 1/2" not in capsys.readouterr().err


def test_a_missing_refit_fails_with_one_line(shared_study, tmp_path, capsys):
    copy = shared_study.copy(tmp_path / "copy")
    second = copy.folder / "models" / "refit-1.keras"
    second.unlink()
    capsys.readouterr()
    assert main(["predict", "--study", "shared", "--storage", copy.url, str(shared_study.corpus), "-o",
                 str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(second) in err[0] and "--refits" in err[0]
    assert not (tmp_path / "o").exists()


def test_prior_adaptation_leaves_the_training_balance_alone():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet([1.0, 2.0, 6.0], size=500)
    adjusted, estimate = adapt_priors(probs, probs.mean(axis=0))
    np.testing.assert_allclose(adjusted, probs, atol=1e-12)
    np.testing.assert_allclose(estimate, probs.mean(axis=0), atol=1e-12)


def test_prior_adaptation_moves_toward_a_shifted_balance():
    """A calibrated model (exact posteriors of a 1-D Gaussian mixture under the training prior) on text
    drawn with another balance: EM recovers the new balance, and the posteriors follow it."""
    rng = np.random.default_rng(1)
    means, train_prior, new_prior = np.array([-2.0, 0.0, 2.0]), np.array([0.1, 0.3, 0.6]), np.array([0.5, 0.3, 0.2])
    y = rng.choice(3, size=20_000, p=new_prior)
    x = rng.normal(means[y], 1.0)
    like = np.exp(-0.5 * (x[:, None] - means[None, :]) ** 2)
    probs = like * train_prior / (like * train_prior).sum(axis=1, keepdims=True)
    adjusted, estimate = adapt_priors(probs, train_prior)
    np.testing.assert_allclose(estimate, new_prior, atol=0.02)
    assert adjusted[:, 0].mean() > probs[:, 0].mean() + 0.1  # 0.35 -> 0.50: toward the true 0.5
    assert (adjusted.argmax(1) == y).mean() > (probs.argmax(1) == y).mean()


def test_adapt_priors_in_predict_reports_the_estimate_and_needs_a_balance(deployed_study, tmp_path):
    d, storage, corpus = deployed_study
    out = tmp_path / "r.json"
    assert main(["predict", "--study", "shared", "--storage", storage, "--adapt-priors", "folder", str(corpus),
                 "-o", str(tmp_path / "a"), "--json", str(out)]) == 0
    files = json.loads(out.read_text())["files"]
    estimates = [f["estimated_class_balance"] for f in files.values()]
    assert len(files) == 3 and all(e == estimates[0] for e in estimates)  # one folder: one estimate
    assert sum(estimates[0].values()) == pytest.approx(1.0, abs=1e-3)
    bundle = next((d / "shared" / "models").glob("trial-*.keras"))
    assert main(["predict", "--model", str(bundle), "--adapt-priors", "file", str(corpus),
                 "-o", str(tmp_path / "b")]) == 2


def test_a_thresholds_decision_carries_its_multipliers_before_the_test_step(deployed_study, shared_study, tmp_path):
    """A study stopped after a thresholds decision, before the test step: export and predict --study
    still have the multipliers, because the decision fixed them from the units' held-out folds."""
    from weight_tuner.confirm.confirmation import recommendation_from

    d, _, corpus = deployed_study
    copy = tmp_path / "copy"
    storage = shared_study.copy(copy).url
    study = load_existing_study(storage, "shared")
    state = json.loads(json.dumps(study.user_attrs["confirmation"]))
    base = state["candidates"]["unweighted"]["units"]
    fitted = [{"Nomenclature": 3.0, "Description": 2.0, "Misc": 1.0}, {"Nomenclature": 12.0, "Description": 2.0, "Misc": 1.0}]
    for (key, unit), m in zip(sorted(state["candidates"]["thresholds"]["units"].items()), fitted):
        unit["scores"] = {k: v + 0.05 for k, v in base[key]["scores"].items()}
        unit["multipliers"] = m
    for cand in state["candidates"].values():  # weights that tie with no weights
        if cand["kind"] == "weights":
            for key, unit in cand["units"].items():
                unit["scores"] = dict(base[key]["scores"])
    rec = recommendation_from(state, study.user_attrs["evaluation"])
    assert rec.decision == "thresholds"
    assert rec.multipliers == {"Nomenclature": pytest.approx(6.0), "Description": pytest.approx(2.0), "Misc": 1.0}
    deployed = stored_recommendation(study).deployed
    rec = rec.replace(deployed=dataclasses.replace(
        deployed, calibration=deployed_calibration(list(deployed.members), rec.decision)))
    assert rec.deployed.calibration is None  # thresholds' multipliers act on uncalibrated probabilities
    store_recommendation(study, rec)
    study.set_user_attr("test_stats", None)  # stopped before the test step
    out = tmp_path / "t.json"
    assert main(["export", "--study", "shared", "--storage", storage, "-o", str(out)]) == 0
    assert json.loads(out.read_text())["recommendation"]["multipliers"] == rec.multipliers
    assert main(["predict", "--study", "shared", "--storage", storage, "--use", "single", str(corpus),
                 "-o", str(tmp_path / "m"), "--probs"]) == 0
    single = rec.trial  # the unweighted trial: thresholds ride on it
    assert main(["predict", "--model", str(copy / "shared" / "models" / f"trial-{single}.keras"), str(corpus),
                 "-o", str(tmp_path / "raw"), "--probs"]) == 0
    m = np.array([rec.multipliers[c] for c in CLASSES])
    for name, probs in _csv_probs(tmp_path / "m").items():
        raw = _csv_probs(tmp_path / "raw")[name] * m
        np.testing.assert_allclose(probs, raw / raw.sum(axis=1, keepdims=True), atol=2e-5)
