"""Racing confirmation: a candidate is stopped only when no scores of its remaining units could make it win."""

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from weight_tuner.confirm.racing import best_final_lower_bound, final_lower_bound, futile, race, replay
from weight_tuner.confirm.statistics import paired_interval

# Per-unit scores of full confirmations (every run trained), stored by benchmarks/replay_racing.py.
CONFIRMATIONS = Path(__file__).parent / "data" / "confirmations.json"
BASE = "unweighted"


def test_the_bound_for_a_fill_is_the_decisions_interval():
    d = [0.012, -0.004, 0.02]
    for fill in (-0.3, 0.0, 0.01, 0.5):
        expected = paired_interval(d + [fill] * 3, 0.5)["ci_low"]
        assert final_lower_bound(d, 6, 0.5, fill) == pytest.approx(expected, abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-0.2, 0.2), min_size=1, max_size=5), st.integers(6, 10),
       st.sampled_from([0.25, 0.5, 1.0]), st.integers(0, 2**32 - 1))
def test_no_completion_of_a_futile_candidate_clears_zero(prefix, n, ratio, seed):
    best = best_final_lower_bound(prefix, n, ratio)
    rng = np.random.default_rng(seed)
    rest = n - len(prefix)
    tries = [rng.uniform(-1, 1, rest) for _ in range(200)]
    tries += [np.full(rest, x) + rng.normal(0, 1e-4, rest) for x in rng.uniform(-0.5, 0.5, 200)]
    found = max(paired_interval(list(prefix) + list(t), ratio)["ci_low"] for t in tries)
    assert found <= best + 1e-9  # the search finds the highest bound there is
    if futile(prefix, n, ratio):
        assert found <= 0


def test_the_best_bound_is_reached():
    # one unit at +0.01: the rest all at +0.01 give a zero-width interval at +0.01
    assert best_final_lower_bound([0.01], 6, 0.5) == pytest.approx(0.01, abs=1e-9)
    assert not futile([0.01], 6, 0.5)
    # with 6 units and 3 folds, one unit below 0 leaves no way to clear 0 (t5 x sqrt(1/6 + 1/2) > 5/sqrt(6))
    assert futile([-0.001], 6, 0.5)
    # with 10 units the same unit can still be outweighed
    assert not futile([-0.001], 10, 0.25)


def test_race_stops_losers_after_their_prefix_and_then_the_reference():
    units = ["r0f0", "r0f1", "r0f2", "r1f0", "r1f1", "r1f2"]
    scores = {BASE: dict.fromkeys(units, 0.80),
              "loser": {"r0f0": 0.81, "r0f1": 0.79, "r0f2": 0.85},
              "thresholds": dict.fromkeys(units, 0.70)}
    result = race(units, scores, 0.5, BASE)
    assert result.stopped == {"loser": 2, "thresholds": 1}
    assert result.units_of("loser") == ("r0f0", "r0f1")
    assert result.units_of(BASE) == ("r0f0", "r0f1")  # every challenger stopped: no weights decided
    assert not result.needed("loser", "r0f2") and result.needed("loser", "r0f1")
    # a plan that deploys every unit: the same stops and decision, but no weights trains on every unit
    deploying = race(units, scores, 0.5, BASE, base_all=True)
    assert deploying.stopped == result.stopped and deploying.base_units == 2
    assert deploying.units_of(BASE) == tuple(units) and deploying.needed(BASE, "r1f2")
    assert deploying.units_of("loser") == ("r0f0", "r0f1")


def test_race_looks_only_at_complete_prefixes_and_keeps_a_live_candidate():
    units = ["a", "b", "c", "d", "e", "f"]
    base = dict.fromkeys(units, 0.8)
    # unit "a" is missing: the negative unit "b" is no look yet
    gap = race(units, {BASE: base, "x": {"b": 0.7}}, 0.5, BASE)
    assert gap.stopped == {} and gap.units_of(BASE) == tuple(units)
    winner = race(units, {BASE: base, "w": dict.fromkeys(units, 0.9), "x": {"a": 0.7}}, 0.5, BASE)
    assert winner.stopped == {"x": 1} and winner.units_of(BASE) == tuple(units)  # w still races: all units


def _synthetic(kind_diffs, seed=0):
    rng = np.random.default_rng(seed)
    units = [f"r{r}f{k}" for r in range(2) for k in range(3)]
    base = {u: float(0.85 + rng.normal(0, 0.01)) for u in units}
    out = {BASE: {"kind": "unweighted", "scores": base}}
    for name, (kind, mean) in kind_diffs.items():
        out[name] = {"kind": kind, "scores": {u: base[u] + float(mean + rng.normal(0, 0.003)) for u in units}}
    return units, out


def test_replay_saves_runs_where_no_weights_win_and_none_where_weights_do():
    units, losing = _synthetic({"trial 1": ("weights", -0.01), "trial 2": ("weights", -0.02),
                                "thresholds": ("thresholds", -0.005)})
    r = replay(units, losing, 0.5, BASE, lambda n: n != "thresholds")
    assert r["same"] and r["decision"] == "no_weights"
    assert r["saved"] >= r["planned"] / 3
    units, winning = _synthetic({"trial 1": ("weights", 0.05), "trial 2": ("weights", -0.02),
                                 "thresholds": ("thresholds", 0.0)})
    r = replay(units, winning, 0.5, BASE, lambda n: n != "thresholds")
    assert r["same"] and r["decision"] == "weights" and r["candidate"] == "trial 1"
    assert r["stopped"].get("trial 1") is None


def test_every_stored_confirmation_replays_to_the_same_decision():
    stored = json.loads(CONFIRMATIONS.read_text())
    assert len(stored) >= 3
    for case in stored:
        r = replay(case["units"], case["candidates"], case["test_train_ratio"], BASE,
                   lambda n: n != "thresholds")
        assert r["same"], (case["name"], r)
        assert r["decision"] == case["decision"], case["name"]
        if r["decision"] == "no_weights" and case["name"].startswith("skol"):
            assert r["saved"] >= r["planned"] / 3, (case["name"], r)


def test_the_views_say_which_candidates_were_stopped_and_why():
    from weight_tuner.notes import candidates_table, decision_sentence
    from weight_tuner.records import Recommendation

    inf = float("inf")
    rows = [{"candidate": BASE, "kind": "unweighted", "mean": 0.86, "class_weights": None,
             "diff": {"mean": 0.0, "ci_low": 0.0, "ci_high": 0.0, "n_units": 2}},
            {"candidate": "thresholds", "kind": "thresholds", "mean": 0.85, "class_weights": None, "stopped_after": 1,
             "diff": {"mean": -0.004, "ci_low": -inf, "ci_high": inf, "n_units": 1}},
            {"candidate": "trial 3", "kind": "weights", "mean": 0.85, "stopped_after": 2,
             "class_weights": {"Nomenclature": 2.0, "Description": 1.0, "Misc": 1.0},
             "diff": {"mean": -0.01, "ci_low": -0.3, "ci_high": 0.28, "n_units": 2}}]
    def record():
        return Recommendation.from_dict({
            "decision": "no_weights", "candidate": BASE, "n_units": 2, "level": 0.95, "candidates": rows,
            "diff_vs_unweighted": rows[0]["diff"], "interval": "t", "class_weights": None, "trial": 0, "folds": 2,
            "repeats": 1})

    def table():  # its notes are wrapped at 100 columns, as every line of it fits them
        text = candidates_table(record())
        assert max(len(line) for line in text.splitlines()) <= 100
        return " ".join(text.split())

    sentence = decision_sentence(record())
    assert "stopped early (racing)" in sentence and "thresholds" in sentence and "inf" not in sentence
    assert "Stopped early (racing): thresholds after 1 unit, trial 3 after 2 units" in table()
    assert "No weights ran all" not in table()
    rows[0]["diff"] = dict(rows[0]["diff"], n_units=6)  # no weights ran on for the deployed model
    assert ("No weights ran all 6 units even so: the decision needed 2, and the deployed model (its members and "
            "calibration) rests on all 6.") in table()
    rows[2].pop("stopped_after")  # one candidate ran every unit: the usual sentence, no racing line for it
    assert "racing" not in decision_sentence(record()) and "trial 3 after" not in table()


def test_a_run_in_training_is_pruned_once_another_process_stops_its_candidate(tmp_path):
    import optuna
    from optuna.trial import TrialState

    from weight_tuner.confirm.runs import UnitRun

    plan = {"units": ["r0f0", "r0f1"], "folds": 2, "racing": True,
            "candidates": {BASE: {"kind": "unweighted"}, "thresholds": {"kind": "thresholds"},
                           "trial 1": {"kind": "weights"}}}
    companion = optuna.create_study(study_name="c", storage=f"sqlite:///{tmp_path}/c.db")

    def finished(candidate, unit, score, thresholds=None):
        attrs = {"candidate": candidate, "unit": unit, "scores": {"important_f1": score}}
        if thresholds is not None:
            attrs["thresholds"] = {"important_f1": thresholds}
        companion.add_trial(optuna.trial.create_trial(state=TrialState.COMPLETE, value=score, user_attrs=attrs))

    runner = object.__new__(UnitRun)  # the check needs the plan and its ratio, not a model
    runner.plan, runner.ratio = plan, 0.5
    running = companion.ask()  # trial 1 on r0f1, mid-training in this process
    finished(BASE, "r0f0", 0.90, thresholds=0.80)
    runner._stop_if_raced_out(running, "trial 1", "r0f1", epoch=0)  # trial 1 has no r0f0 yet: still needed
    finished("trial 1", "r0f0", 0.50)  # another process finishes it: a loss no later unit can undo
    with pytest.raises(optuna.TrialPruned):
        runner._stop_if_raced_out(running, "trial 1", "r0f1", epoch=1)
    assert "after epoch 2" in companion.trials[0].user_attrs["raced_out"]
    runner._stop_if_raced_out(running, BASE, "r0f0", epoch=1)  # a counted run is never pruned
    runner.plan = dict(plan, racing=False)
    runner._stop_if_raced_out(running, "trial 1", "r0f1", epoch=1)  # a plan without racing trains every run
