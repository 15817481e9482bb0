"""tune --trials auto: the stopping rule, its noise, its verdict shared through the study, and its replay."""

import json
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from weight_tuner.errors import ConfigError
from weight_tuner.search.stopping import (DONE_ATTR, Step, StoppingRule, moves, search_done, set_rule, stop_after,
                                          stop_line, trials_asked, validation_noise)

RULE = StoppingRule(max_trials=40, patience=8, min_trials=16, top=3)
DELTA = 0.005


def _steps(scores):
    """One distinct weight vector per trial (``None``: pruned)."""
    return [Step(s, (float(i + 1), 0.0, 0.0)) for i, s in enumerate(scores)]


def test_a_flat_search_stops_at_the_minimum():
    # after three candidates fill the top, no trial beats the third by more than the noise
    scores = [0.820, 0.821, 0.822] + [0.82 + 0.004 * (i % 2) for i in range(40)]
    assert moves(_steps(scores), 3, DELTA) == [0, 1, 2]
    assert stop_after(_steps(scores), RULE, DELTA) == 16


def test_the_search_goes_on_while_the_top_candidates_move():
    scores = [0.80 + 0.01 * i for i in range(30)]  # each trial a new best by more than the noise
    assert stop_after(_steps(scores), RULE, DELTA) is None
    late = [0.80] * 12 + [0.90] + [0.80] * 27  # a move at the 13th trial: eight more without one
    assert stop_after(_steps(late), RULE, DELTA) == 21


def test_the_cap_stops_a_search_that_never_settles():
    scores = [0.80 + 0.01 * i for i in range(60)]
    assert stop_after(_steps(scores), RULE, DELTA) == 40


def test_pruned_trials_and_the_same_weights_again_do_not_move_the_candidates():
    same = [Step(0.80, (1.0,)), Step(0.81, (2.0,)), Step(0.82, (3.0,)), Step(0.95, (1.0,)), Step(None, (4.0,)),
            Step(0.83, (5.0,)), Step(0.90, (6.0,))]
    # trial 3 repeats a candidate already in the top; 4 is pruned; 5 enters by 0.01 over the last place at the last
    # move (0.80), less than the noise; 6 by more
    assert moves(same[:5] + [Step(0.81, (5.0,))] + same[6:], 3, 0.02) == [0, 1, 2, 6]
    # no weights is compared with every candidate, never one of them
    assert moves([Step(0.99, (0.0, 0.0, 0.0))] + same, 3, 0.02) == [1, 2, 3, 6, 7]


def test_entries_within_the_noise_count_once_they_add_up_to_more():
    creeping = _steps([0.80, 0.80, 0.80, 0.803, 0.806])  # each beats the last place then by 0.003 < 0.005
    assert moves(creeping, 3, DELTA) == [0, 1, 2, 4]  # the last is 0.006 above where the last move left it


def test_the_noise_is_the_binomial_sd_of_the_mean_of_the_important_f1s():
    counts = {"Nomenclature": 1000, "Description": 4000, "Misc": 20000}
    noise = validation_noise({"Nomenclature": 0.9, "Description": 0.95}, counts)
    n, d = 901 / 1002, 3801 / 4002  # one success and one failure added to each
    assert noise == pytest.approx(((n * (1 - n) / 1000 + d * (1 - d) / 4000) ** 0.5) / 2)
    # a perfect score on 4 lines is not certainty: it still reads as noise of about 0.09
    assert validation_noise({"Nomenclature": 1.0, "Description": 1.0}, {"Nomenclature": 4, "Description": 146}) > 0.09
    # fewer validation lines, more noise: a small corpus needs a larger move to count
    assert validation_noise({"Nomenclature": 0.9, "Description": 0.95}, {k: v // 10 for k, v in counts.items()}) > noise


def _study(scores, counts=None):
    study = optuna.create_study(direction="maximize")
    study.set_user_attr("class_counts", {"val": counts or {"Nomenclature": 1000, "Description": 4000, "Misc": 1}})
    for i, s in enumerate(scores):
        study.add_trial(optuna.trial.create_trial(
            value=s, state=TrialState.COMPLETE, user_attrs={
                "class_weights_trained": {"Nomenclature": 2.0 + i, "Description": 1.0, "Misc": 1.0},
                "important_f1": s, "val_Nomenclature_f1": 0.9, "val_Description_f1": 0.95}))
    return study


def test_the_verdict_is_stored_once_and_a_new_rule_clears_it():
    study = _study([0.820, 0.821, 0.822] + [0.82] * 20)
    assert search_done(study) is None  # no rule: a fixed number of trials
    set_rule(study, RULE)
    assert search_done(study) == 16
    assert study.user_attrs[DONE_ATTR]["last_move"] == 2
    assert "moved none of the top 3 candidates" in stop_line(study)
    study.add_trial(optuna.trial.create_trial(value=0.99, state=TrialState.COMPLETE, user_attrs={
        "class_weights_trained": {"Nomenclature": 99.0, "Description": 1.0, "Misc": 1.0}, "important_f1": 0.99}))
    assert search_done(study) == 16  # stored: every process stops at the same count, whatever finished since
    set_rule(study, StoppingRule(max_trials=40, patience=30, min_trials=16, top=3))
    assert study.user_attrs[DONE_ATTR] is None and search_done(study) is None
    set_rule(study, None)
    assert stop_line(study) == ""


def test_only_trials_before_the_first_unfinished_one_are_read():
    study = _study([0.820, 0.821, 0.822] + [0.82] * 12)
    study.add_trial(optuna.trial.create_trial(state=TrialState.WAITING))
    for _ in range(10):
        study.add_trial(optuna.trial.create_trial(value=0.82, state=TrialState.COMPLETE, user_attrs={
            "class_weights_trained": {"Nomenclature": 2.0, "Description": 1.0, "Misc": 1.0}, "important_f1": 0.82}))
    set_rule(study, RULE)
    assert search_done(study) is None  # 15 trials read: the waiting one hides the rest


def test_auto_needs_the_confirm_design_and_a_fixed_number_has_no_rule():
    assert trials_asked(16, 40, {"design": "confirm", "top": 3}) == (16, None)
    assert trials_asked("auto", 25, {"design": "confirm", "top": 2}) == (25, StoppingRule(max_trials=25, top=2))
    with pytest.raises(ConfigError, match="--trials auto needs --design confirm"):
        trials_asked("auto", 40, {"design": "cv", "top": 3})


REPLAY = Path(__file__).parent / "data" / "searches.json"


def test_the_replay_reproduces_where_the_rule_stops_and_whether_the_candidates_held():
    """benchmarks/replay_stopping.py's stored searches (docs/benchmarks.md, "When the search is done"): the rule
    replayed over each search's steps stops where the replay found, and the top candidates it leaves are those of
    all the trials exactly where the replay (the confirmation's own select_candidates) found them so."""
    cases = json.loads(REPLAY.read_text())["cases"]
    assert {c["name"].split("-")[0] for c in cases} == {"sample", "power", "skol"}
    for case in cases:
        steps = [Step(s["score"], tuple(s["key"])) for s in case["steps"]]
        rule = StoppingRule(top=case["top"])
        at = stop_after(steps, rule, case["delta"]) or len(steps)
        assert at == case["stop_at"] and moves(steps, case["top"], case["delta"]) == case["moves"], case["name"]
        assert (_leaders(steps[:at], case["top"]) == _leaders(steps, case["top"])) == case["same_candidates"]


def test_auto_is_the_default_only_where_the_replay_says_it_is_worth_it():
    """Issue 46, 1: the default of tune only if replay changed no study's candidates and saved at least 30% of SKOL's
    trials."""
    from weight_tuner.cli import build_parser

    cases = json.loads(REPLAY.read_text())["cases"]
    skol = [1 - c["stop_at"] / c["trials"] for c in cases if c["name"].startswith("skol")]
    worth = all(c["same_candidates"] for c in cases) and sum(skol) / len(skol) >= 0.3
    assert (build_parser().parse_args(["tune"]).trials == "auto") == worth


def _leaders(steps, top):
    best = {}
    for s in steps:
        if s.score is not None and any(s.key):
            best[s.key] = max(best.get(s.key, -1.0), s.score)
    return sorted(best, key=best.get, reverse=True)[:top]


def test_tune_trials_auto_stops_every_process_at_the_cap_and_a_rerun_adds_nothing(tmp_path, cache_dir, capsys):
    from support import SAMPLE_DOCS, study_toml

    from weight_tuner.cli import main

    url = f"sqlite:///{tmp_path}/a.db"
    argv = ["tune", "--storage", url, "--study", "a", "--config", str(study_toml(tmp_path, epochs=2)), "--trials",
            "auto", "--max-trials", "3", "--no-confirm", "--jobs", "1", "--sample-docs", SAMPLE_DOCS, "--cache-dir",
            str(cache_dir)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "3 finished trials" in out and "--trials auto: stopped at --max-trials 3" in out
    study = optuna.load_study(study_name="a", storage=url)
    assert study.user_attrs["stopping_rule"]["max_trials"] == 3 and study.user_attrs[DONE_ATTR]["trials"] == 3
    assert main(argv) == 0  # resumed: the stored verdict stands, nothing more is trained
    assert _finished(optuna.load_study(study_name="a", storage=url)) == 3
    assert main(argv[:argv.index("--trials") + 1] + ["4"] + argv[argv.index("--max-trials"):]) == 0
    study = optuna.load_study(study_name="a", storage=url)  # a fixed --trials clears the rule: one more trial
    assert _finished(study) == 4 and study.user_attrs["stopping_rule"] is None


def _finished(study):
    return len(study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED)))


def test_trials_auto_with_the_cv_design_is_one_line_and_exit_2(tmp_path, capsys):
    from support import one_line_error

    from weight_tuner.cli import main

    err = one_line_error(capsys, ["tune", "--storage", f"sqlite:///{tmp_path}/c.db", "--trials", "auto", "--design",
                                  "cv"])
    assert err == "weight-tuner: error: --trials auto needs --design confirm: its rule reads the noise of one validation split"
    assert not (tmp_path / "c.db").exists()
    with pytest.raises(SystemExit) as exc:
        main(["tune", "--trials", "many"])
    assert exc.value.code == 2 and "expected an integer, got 'many' or 'auto'" in capsys.readouterr().err
