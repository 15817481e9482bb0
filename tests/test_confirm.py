"""The recommendation: one weight scale, paired units, the interval and decision rule, resume, power."""

import json
from types import SimpleNamespace

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from weight_tuner.cli import main
from weight_tuner.config import CLASSES
from weight_tuner.confirm.confirmation import confirm
from weight_tuner.confirm.statistics import decide, paired_interval
from weight_tuner.folds import fold_of_pieces, make_units, unit_data
from weight_tuner.model import normalise_weights
from weight_tuner.schemes import count_schemes
from weight_tuner.search.run import tune
from weight_tuner.space import StudyConfig

from conftest import TINY_DOCS, TINY_MODEL, tiny_config

# --------------------------------------------------------------------------- one scale

def test_normalised_weights_average_one_over_training_lines_and_keep_ratios():
    counts = {"Nomenclature": 10, "Description": 40, "Misc": 200}
    w = normalise_weights({"Nomenclature": 100.0, "Description": 10.0, "Misc": 0.1}, counts)
    assert sum(counts[c] * w[c] for c in CLASSES) / sum(counts.values()) == pytest.approx(1.0, rel=1e-8)
    assert w["Nomenclature"] / w["Misc"] == pytest.approx(1000.0, rel=1e-8)
    assert normalise_weights(w, counts) == w  # idempotent
    assert normalise_weights({c: 1.0 for c in CLASSES}, counts) == {c: 1.0 for c in CLASSES}
    assert normalise_weights(None, counts) is None


def test_same_ratios_train_identically(prepared):
    from weight_tuner.model import ModelCache
    from weight_tuner.train import train_model

    schemes = count_schemes(prepared.class_counts["train"])
    inverse, balanced = schemes["inverse_frequency"], schemes["balanced"]
    assert inverse != balanced  # different numbers, the same ratios
    cache = ModelCache()  # each run from the same fresh state (test_model: a reused model trains as a new one)
    _, a = train_model(prepared, tiny_config(epochs=2, class_weights=inverse), cache=cache)
    _, b = train_model(prepared, tiny_config(epochs=2, class_weights=balanced), cache=cache)
    _, scaled = train_model(prepared, tiny_config(epochs=2, class_weights={c: 7.0 * inverse[c] for c in CLASSES}),
                            cache=cache)
    assert [h["loss"] for h in a] == [h["loss"] for h in b] == [h["loss"] for h in scaled]
    assert a[-1]["val"] == b[-1]["val"]
    _, other = train_model(prepared, tiny_config(epochs=2, class_weights={"Nomenclature": 1.0, "Description": 1.0,
                                                                          "Misc": 3.0}), cache=cache)
    assert [h["loss"] for h in other] != [h["loss"] for h in a]  # ratios do matter


# --------------------------------------------------------------------------- units

def test_units_hold_out_each_non_test_chunk_once_per_repeat(prepared):
    n_pieces = sum(len(prepared.splits[s].offsets) - 1 for s in ("train", "val"))
    for repeat in (0, 1):
        fold = fold_of_pieces(prepared, 3, repeat)
        assert len(fold) == n_pieces and set(fold.tolist()) == {0, 1, 2}
    assert (fold_of_pieces(prepared, 3, 0) != fold_of_pieces(prepared, 3, 1)).any()  # a new partition per repeat
    test_ids = set(prepared.splits["test"].chunk_ids)
    held_lines = 0
    for unit in make_units(3, 1):
        data = unit_data(prepared, unit, 3)
        train_ids, held_ids = set(data.train.chunk_ids), set(data.val.chunk_ids)
        assert not train_ids & held_ids and not (train_ids | held_ids) & test_ids
        held_lines += data.val.n
        # features and labels travel with their chunk
        src = prepared.splits["train"]
        cid = src.chunk_ids[0]
        where = data.train if cid in train_ids else data.val
        k = where.chunk_ids.index(cid)
        lo, hi = where.offsets[k], where.offsets[k + 1]
        np.testing.assert_array_equal(where.dense()[lo:hi], src.dense()[src.offsets[0]:src.offsets[1]])
        np.testing.assert_array_equal(where.y[lo:hi], src.y[src.offsets[0]:src.offsets[1]])
        assert not where.dense()[-1].any()  # the padding row
        # A unit is a view: both of its splits index the prepared rows, they copy no features.
        for part in (data.train, data.val):
            assert part.rows is src.rows and np.shares_memory(part.rows.data, src.rows.data)
    assert held_lines == prepared.splits["train"].n + prepared.splits["val"].n


def test_a_unit_run_scores_its_held_out_fold_once_and_still_checks_the_race_each_epoch(prepared, monkeypatch):
    """Nothing reads a unit run's per-epoch scores: predicting the held-out fold after every epoch too
    would only repeat the work."""
    from weight_tuner import train
    from weight_tuner.unitrun import run_unit

    unit = make_units(2, 1)[0]
    data = unit_data(prepared, unit, 2)
    predicted, epochs = [], []
    real = train.predict_probs
    monkeypatch.setattr(train, "predict_probs", lambda model, split, *a, **k: predicted.append(split) or real(
        model, split, *a, **k))
    out = run_unit(data, tiny_config(epochs=3), unit, epoch_hook=lambda epoch, stats: epochs.append((epoch, stats)))
    assert predicted == [data.val] and out["lines"] == data.val.n
    assert epochs == [(0, None), (1, None), (2, None)]  # the race's check after every epoch


# --------------------------------------------------------------------------- the rule

def _scores(base, diffs):
    return {f"r0f{i}": b + d for i, (b, d) in enumerate(zip(base, diffs))}


BASE = [0.80, 0.83, 0.78, 0.82, 0.79, 0.81]


def test_interval_and_decision_on_constructed_scores():
    ratio = 0.5  # 3 folds: held-out lines are half the training lines
    win = [0.030, 0.034, 0.028, 0.033, 0.031, 0.029]
    tie = [0.010, -0.012, 0.004, -0.006, 0.009, -0.003]
    loss = [-0.030, -0.025, -0.035, -0.028, -0.032, -0.027]
    d = np.array(win)
    expected_half = 2.5706 * np.sqrt((1 / 6 + ratio) * d.var(ddof=1))  # t(0.975, 5)
    got = paired_interval(win, ratio)
    assert got["mean"] == pytest.approx(d.mean())
    assert got["ci_high"] - got["mean"] == pytest.approx(expected_half, rel=1e-3)
    assert got["ci_low"] > 0 and got["n_units"] == 6

    def run(**diffs):
        cands = {"unweighted": {"kind": "unweighted", "scores": _scores(BASE, [0] * 6)}}
        for name, (kind, dd) in diffs.items():
            cands[name] = {"kind": kind, "scores": _scores(BASE, dd)}
        return decide(cands, ratio)

    assert run(a=("weights", win))["decision"] == "weights"
    assert run(a=("weights", win))["candidate"] == "a"
    assert run(a=("weights", tie))["decision"] == "no_weights"
    tied = run(a=("weights", tie))
    assert tied["candidates"][1]["diff"]["ci_low"] < 0 < tied["candidates"][1]["diff"]["ci_high"]
    assert run(a=("weights", loss))["decision"] == "no_weights"
    assert run(a=("weights", loss))["candidates"][1]["diff"]["ci_high"] < 0
    # thresholds win only when their own interval clears 0 and beats the weights'
    assert run(a=("weights", tie), t=("thresholds", win))["decision"] == "thresholds"
    both = run(a=("weights", [w + 0.01 for w in win]), t=("thresholds", win))
    assert both["decision"] == "weights" and both["diff_vs_unweighted"]["mean"] == pytest.approx(np.mean(win) + 0.01)
    # one unit is no evidence
    one = decide({"unweighted": {"kind": "unweighted", "scores": {"r0f0": 0.5}},
                  "a": {"kind": "weights", "scores": {"r0f0": 0.9}}}, ratio)
    assert one["decision"] == "no_weights" and one["candidates"][1]["diff"]["ci_low"] == -np.inf


def test_a_noise_winner_is_not_recommended():
    # the measured failure: a candidate ahead on most units by less than the unit-to-unit noise
    rng = np.random.default_rng(0)
    noisy = (0.004 + rng.normal(0, 0.007, size=6)).tolist()
    result = decide({"unweighted": {"kind": "unweighted", "scores": _scores(BASE, [0] * 6)},
                     "a": {"kind": "weights", "scores": _scores(BASE, noisy)}}, 0.5)
    assert result["decision"] == "no_weights"


def test_the_detectable_gain_is_found_as_often_as_it_says():
    """The gain the views print (found 80% of the time at the measured noise) against simulated confirmations:
    normal unit differences with that sd and a true mean of that gain clear 0 about 80% of the time; half the
    gain, far less often."""
    from weight_tuner.confirm.statistics import detectable_gain, unit_noise

    sd, n, ratio = 0.02, 6, 0.5
    gain = detectable_gain(sd, n, ratio)
    assert gain == pytest.approx((2.5706 + 0.9195) * np.sqrt(1 / 6 + 0.5) * sd, rel=1e-3)
    rng = np.random.default_rng(1)

    def found(mean):
        return np.mean([paired_interval(rng.normal(mean, sd, n), ratio)["ci_low"] > 0 for _ in range(4000)])

    assert 0.72 < found(gain) < 0.88 and found(gain / 2) < 0.35
    assert detectable_gain(sd, 1, ratio) == np.inf and detectable_gain(sd, 12, ratio) < gain
    # the noise is pooled over candidates with 2 or more units, each around its own mean
    cands = {"unweighted": {"scores": _scores(BASE, [0] * 6)},
             "a": {"scores": _scores(BASE, [0.01, 0.03, 0.01, 0.03, 0.01, 0.03])},
             "b": {"scores": {"r0f0": BASE[0] + 0.5}}}  # one unit: no noise to measure
    assert unit_noise(cands)["sd"] == pytest.approx(np.std([0.01, 0.03] * 3, ddof=1)) and unit_noise(cands)["df"] == 5
    assert unit_noise({"unweighted": cands["unweighted"], "b": cands["b"]}) is None


def test_a_no_weights_decision_says_what_it_could_have_shown():
    """Issue 45, 9: "not shown" must not read as "no effect": the sentence gives the gain the confirmation finds
    80% of the time at its noise, and what more repeats would find."""
    from weight_tuner.confirm.confirmation import recommendation_from
    from weight_tuner.notes import decision_sentence

    diffs = [0.07, 0.12, 0.09, -0.02]  # the sample study's shape: +0.06 ahead, one unit behind
    units = ["r0f0", "r0f1", "r1f0", "r1f1"]
    state = {"folds": 2, "repeats": 2, "units": units, "candidates": {
        name: {"kind": kind, "class_weights": None, "trial": 0, "units": {
            u: {"scores": {"important_f1": 0.8 + d, "Nomenclature_f1": 0.8, "Description_f1": 0.8},
                "lines": 100, "train_lines": 100} for u, d in zip(units, ds)}}
        for name, kind, ds in (("unweighted", "unweighted", [0] * 4), ("trial 3", "weights", diffs))}}
    rec = recommendation_from(state, {"design": "confirm"})
    assert rec.decision == "no_weights" and rec.detectable["n_units"] == 4
    sd = np.std(diffs, ddof=1)
    assert rec.detectable["sd"] == pytest.approx(sd)
    sentence = decision_sentence(rec)
    assert '"not shown", not "no effect"' in sentence and f"sd {sd:.4f}" in sentence
    assert f"4 units find a true gain of +{rec.detectable['gain']:.4f} 80% of the time" in sentence
    assert "--repeats 4 (8 units) would find +" in sentence
    assert "not shown" not in decision_sentence(rec.replace(detectable=None))


# --------------------------------------------------------------------------- the pipeline

def test_weights_are_recommended_where_weighting_truly_helps(tmp_path, capsys):
    """Power, not only caution: Nomenclature 10x rarer and a short training budget, where an
    unweighted model learns to ignore the rare class."""
    toml = tmp_path / "power.toml"
    toml.write_text('schemes = ["unweighted", "inverse_frequency", "sqrt_inverse_frequency"]\n'
                    "[model]\nhidden_size = 8\nnum_layers = 1\nepochs = 3\nbatch_size = 16\nwindow_size = 10\n"
                    'prediction_stride = 5\nlearning_rate = 0.01\ninput_projection = 0\n[pruner]\ntype = "none"\n')
    storage = f"sqlite:///{tmp_path}/power.db"
    rc = main(["tune", "--sample-docs", "60", "--sample-rare-nomenclature", "10", "--config", str(toml),
               "--trials", "3", "--study", "power", "--storage", storage, "--confirm-top", "1",
               "--cache-dir", str(tmp_path / "cache"), "--refits", "0"])  # no refits: predict --study takes the ensemble
    assert rc == 0
    out = capsys.readouterr().out
    assert "Recommendation: Use class weights" in out and "vs no weights" in out
    export = tmp_path / "power.json"
    assert main(["export", "--study", "power", "--storage", storage, "-o", str(export)]) == 0
    rec = json.loads(export.read_text())["recommendation"]
    assert rec["decision"] == "weights" and rec["diff_vs_unweighted"]["ci_low"] > 0
    assert rec["class_weights"]["Nomenclature"] > rec["class_weights"]["Misc"]
    assert rec["n_units"] == 6 and rec["folds"] == 3 and rec["repeats"] == 2
    # predict --study uses the recommended model
    from weight_tuner.deploy.loaded import recommended_model

    deployed = recommended_model(storage, "power")  # the recommended candidate's 6 confirmation models
    members = rec["deployed_model"]["ensemble"]["members"]
    stored = optuna.load_study(study_name="power", storage=storage).user_attrs["recommendation"]
    assert deployed.kind == "ensemble" and len(deployed.bundles) == 6 and deployed.multipliers is None
    assert rec["deployed_model"]["candidate"] == stored["candidate"] and sorted(m["unit"] for m in members) == sorted(
        f"r{r}f{k}" for r in range(2) for k in range(3))
    single = recommended_model(storage, "power", use="single")
    assert single.bundles[0].name == f"trial-{rec['trial']}.keras" and single.bundles[0].exists()


def test_null_class_weights_are_accepted_by_train(tmp_path, cache_dir):
    cfg = tmp_path / "model.json"
    cfg.write_text(json.dumps(dict(TINY_MODEL, epochs=1)))
    export = tmp_path / "no-weights.json"
    export.write_text(json.dumps({"class_weights": None, "recommendation": {"decision": "no_weights"}}))
    for weights in ("null", str(export)):
        stats = tmp_path / "stats.json"
        rc = main(["train", "--weights", weights, "--config", str(cfg), "--sample-docs", str(TINY_DOCS),
                   "--cache-dir", str(cache_dir), "--out", str(stats)])
        assert rc == 0
        assert json.loads(stats.read_text())["model_config"]["class_weights"] is None


def test_cross_validated_design_reports_one_value_per_unit(prepared, tmp_path):
    import optuna

    storage = f"sqlite:///{tmp_path}/cv.db"
    cfg = StudyConfig(model=dict(TINY_MODEL, epochs=1), schemes=["unweighted", "inverse_frequency"])
    cfg.set_evaluation(design="cv", folds=2, repeats=1)
    assert cfg.make_pruner().__class__ is optuna.pruners.WilcoxonPruner
    study = tune(prepared, storage, "cv", 2, cfg)
    done = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(done) == 2
    for t in done:
        assert set(t.intermediate_values) == {0, 1}  # step = unit index
        assert set(t.user_attrs["unit_scores"]) == {"r0f0", "r0f1"}
        assert t.value == pytest.approx(np.mean(list(t.intermediate_values.values())))
    assert study.user_attrs["evaluation"]["design"] == "cv"  # a resume with other settings: test_cli's refusals


def test_a_confirmation_resumes_and_a_new_plan_reuses_the_finished_runs_of_unchanged_candidates(prepared,
                                                                                                 tmp_path):
    import optuna

    storage = f"sqlite:///{tmp_path}/p.db"
    cfg = StudyConfig(model=dict(TINY_MODEL, epochs=1),
                      schemes=["unweighted", "inverse_frequency", "sqrt_inverse_frequency"])
    study = tune(prepared, storage, "p", 3, cfg)
    evaluation = {"folds": 2, "repeats": 1, "top": 1}  # unweighted + 1 candidate on 2 units: 4 runs
    calls = []

    def interrupt_after_three(name, unit):
        calls.append((name, unit.key))
        if len(calls) == 3:
            raise KeyboardInterrupt

    # interrupted: the finished runs are kept, and a rerun trains only the one left
    with pytest.raises(KeyboardInterrupt):
        confirm(study, prepared, evaluation, after_unit=interrupt_after_three)
    assert "recommendation" not in study.user_attrs
    saved = study.user_attrs["confirmation"]["candidates"]
    assert sum(len(c["units"]) for n, c in saved.items() if n != "thresholds") == 3
    # a second planner that found no runs enqueued (the first slow, past the joiners' grace) queues them all again
    companion = optuna.load_study(study_name=study.user_attrs["confirmation_study"], storage=storage)
    planned = [(t.user_attrs["candidate"], t.user_attrs["unit"]) for t in companion.trials]
    for name, unit in planned:
        companion.enqueue_trial({}, user_attrs={"candidate": name, "unit": unit})
    again = []
    rec = confirm(study, prepared, evaluation, after_unit=lambda n, u: again.append((n, u.key)))
    assert len(again) == 1 and again[0] not in calls  # each run trained once all the same
    twins = [t for t in companion.get_trials() if t.number >= len(planned)]
    assert len(twins) == len(planned) and all(t.state == TrialState.FAIL for t in twins)
    assert all("a duplicate of unit run #" in t.user_attrs["fail_reason"] for t in twins)
    assert rec.n_units == 2 and study.user_attrs["recommendation"]["decision"] == rec.decision
    rerun = []
    confirm(study, prepared, evaluation, after_unit=lambda n, u: rerun.append(n))
    assert rerun == []  # everything is done: the decision is recomputed from the stored units
    first = [name for name, _ in calls] + [name for name, _ in again]
    second = []
    assert len(first) == 4 and "unweighted" in first and len(set(first)) == 2  # and the best weights, 2 units
    old_name = study.user_attrs["confirmation_study"]
    # another plan (one more candidate): a new companion study, where only the new candidate trains
    rec = confirm(study, prepared, {"folds": 2, "repeats": 1, "top": 2}, after_unit=lambda n, u: second.append(n))
    new_name = study.user_attrs["confirmation_study"]
    assert new_name != old_name and rec.n_units == 2
    new = [r.candidate for r in rec.candidates if r.candidate not in set(first) | {"thresholds"}]
    assert len(new) == 1 and second == [new[0], new[0]]  # its two units, nothing else retrained
    companion = optuna.load_study(study_name=new_name, storage=storage)
    reused = [t for t in companion.trials if "reused_from" in t.user_attrs]
    assert len(reused) == 4 and all(t.user_attrs["reused_from"].startswith(old_name) for t in reused)
    # a candidate whose config changed (a new default, say) reuses nothing: every run trains again
    study.set_user_attr("model_config", dict(study.user_attrs["model_config"], dropout=0.1))
    third = []
    confirm(study, prepared, {"folds": 2, "repeats": 1, "top": 1}, after_unit=lambda n, u: third.append(n))
    latest = optuna.load_study(study_name=study.user_attrs["confirmation_study"], storage=storage)
    assert latest.study_name not in (old_name, new_name) and sorted(third) == sorted(first)  # the first plan's runs
    assert not any("reused_from" in t.user_attrs for t in latest.trials)


def test_a_no_weights_export_names_its_closest_challenger_and_interval():
    from weight_tuner.export import recommendation_export
    from weight_tuner.records import Recommendation

    base = {"r0f0": 0.80, "r0f1": 0.82, "r1f0": 0.81}
    near = {k: v + d for (k, v), d in zip(base.items(), (0.02, -0.015, 0.01))}  # +0.005, interval across 0
    far = {k: v - 0.05 for k, v in base.items()}
    rec = decide({"unweighted": {"kind": "unweighted", "scores": base}, "trial 3": {"kind": "weights", "scores": near},
                  "trial 4": {"kind": "weights", "scores": far}}, 0.5)
    rec.update(class_weights=None, n_units=3, folds=3, repeats=1, trial=0)
    out = recommendation_export(Recommendation.from_dict(rec))
    assert out["decision"] == "no_weights" and out["diff_vs_unweighted"] is None
    challenger = out["closest_challenger"]
    assert challenger["candidate"] == "trial 3" and challenger["diff_vs_unweighted"]["mean"] == pytest.approx(0.005)
    assert challenger["diff_vs_unweighted"]["ci_low"] < 0 < challenger["diff_vs_unweighted"]["ci_high"]
    assert "trial 3" in out["sentence"] and out["metric"].startswith("important_f1")


def test_trial_config_refuses_a_search_space_version_it_does_not_know(tmp_path, prepared):
    from weight_tuner.errors import StudyError
    from weight_tuner.search.run import create_or_resume
    from weight_tuner.space import StudyConfig
    from weight_tuner.storage import trial_config

    storage = f"sqlite:///{tmp_path}/v.db"
    config = StudyConfig(model=dict(TINY_MODEL))
    study, _ = create_or_resume(storage, "v", prepared, config, dict(TINY_MODEL))
    weights = {"Nomenclature": 8.0, "Description": 2.0, "Misc": 1.0}
    trial = SimpleNamespace(params=config.space.params_for(weights), user_attrs={})  # what trial_config reads
    assert trial_config(study, trial).class_weights == pytest.approx(weights)  # version 1 replays
    study.set_user_attr("search_space", dict(study.user_attrs["search_space"], version=99))
    with pytest.raises(StudyError, match="search space version 99"):
        trial_config(study, trial)


def test_a_recommendation_older_than_the_finished_trials_is_withdrawn(tmp_path):
    from weight_tuner.confirm.confirmation import withdraw_stale_recommendation
    from weight_tuner.notes import PENDING_DECISION
    from weight_tuner.records import Candidate, Difference, Recommendation
    from weight_tuner.storage import store_recommendation

    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/w.db", study_name="w", direction="maximize")
    study.add_trial(optuna.trial.create_trial(value=0.5))
    none = Difference(0.0, 0.0, 0.0, 2)
    store_recommendation(study, Recommendation("no_weights", "unweighted", none, 0.95, "t",
                                               (Candidate("unweighted", "unweighted", 0.5, none),), None, 0, 2, 2, 1,
                                               finished_trials=1))
    study.set_user_attr("decision", "no_weights: ...")
    assert withdraw_stale_recommendation(study) is False  # it covers every finished trial
    study.add_trial(optuna.trial.create_trial(value=0.6))
    assert withdraw_stale_recommendation(study) is True
    assert study.user_attrs["recommendation"] is None and study.user_attrs["decision"] == PENDING_DECISION
    assert withdraw_stale_recommendation(study) is False


def test_the_recommendation_is_one_typed_record_stored_and_read_back_alike(shared_study, tmp_path):
    """Every view reads the recommendation through ``stored_recommendation``: the stored row reads back
    field for field, a row an earlier version stored (without later fields) reads with their defaults, and
    a row that is not a recommendation is one error naming the study."""
    from weight_tuner.errors import StudyError
    from weight_tuner.records import Recommendation
    from weight_tuner.storage import CHECKSUM_KEY, _checksum, store_recommendation, stored_recommendation

    raw = {k: v for k, v in shared_study.study().user_attrs["recommendation"].items() if k != CHECKSUM_KEY}
    rec = stored_recommendation(shared_study.study())
    assert rec.to_dict() == json.loads(json.dumps(raw))  # nothing dropped, renamed or added on the way
    assert rec.deployed.members and rec.deployed.default == "refit" and rec.candidates[0].candidate == "unweighted"
    assert Recommendation.from_dict(json.loads(json.dumps(rec.to_dict()))) == rec

    older = {k: v for k, v in raw.items() if k not in ("deployed", "design", "multipliers", "finished_trials",
                                                       "confirmation_study", "test_train_ratio")}
    old = Recommendation.from_dict(older)
    assert (old.deployed, old.default_model, old.design, old.multipliers) == (None, "single", "confirm", None)

    storage = f"sqlite:///{tmp_path / 'r.db'}"
    study = optuna.create_study(study_name="r", storage=storage)
    store_recommendation(study, rec.replace(decision="thresholds", multipliers={c: 1.0 for c in CLASSES}))
    back = stored_recommendation(optuna.load_study(study_name="r", storage=storage))
    assert back.decision == "thresholds" and back.multipliers == {c: 1.0 for c in CLASSES}
    assert back.deployed == rec.deployed
    not_one = {k: v for k, v in raw.items() if k != "candidates"}
    store_recommendation(study, None)
    study.set_user_attr("recommendation", dict(not_one, checksum=_checksum(not_one)))  # intact, but not a recommendation
    with pytest.raises(StudyError, match=r"study 'r': its stored recommendation is not one weight-tuner reads "
                                         r"\(KeyError: 'candidates'\)"):
        stored_recommendation(study)
    study.set_user_attr("recommendation", raw)  # no checksum: refused, whatever the row says
    with pytest.raises(StudyError, match=r"study 'r': its stored recommendation has no checksum"):
        stored_recommendation(study)


def test_a_unit_run_given_back_is_queued_in_its_place():
    """Ctrl-C or SIGTERM in a unit run gives it back: queued again, marked as the retry of the live trial (this
    failed with an AttributeError on a live trial's system attrs, so the command exited 1, not 130 or 143)."""
    from weight_tuner.confirm.runs import give_back
    from weight_tuner.retries import QUEUE_ATTR

    companion = optuna.create_study()
    companion.enqueue_trial({}, user_attrs={"candidate": "unweighted", "unit": "r0f0"})
    companion.enqueue_trial({}, user_attrs={"candidate": "trial 3", "unit": "r0f0"})
    live = companion.ask()
    give_back(companion, live)
    waiting = companion.get_trials(states=(TrialState.WAITING,))
    retry = next(t for t in waiting if t.user_attrs.get("retry_of") == live.number)
    assert (retry.user_attrs["candidate"], retry.user_attrs["unit"], retry.user_attrs[QUEUE_ATTR]) == (
        "unweighted", "r0f0", live.number)  # before the run queued after it
