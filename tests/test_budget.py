"""tune --timeout: the budget in the study, the estimate of what the rest of a tune needs, the search's stop."""

import datetime
import time

import optuna
import pytest
from optuna.trial import TrialState

from weight_tuner.budget import (BUDGET_ATTR, Budget, Estimate, refits_fit, search_may_go_on, set_budget, spent,
                                 time_left)

EVALUATION = {"folds": 3, "repeats": 2, "top": 3}  # 24 unit runs at most


def _study(durations, overlap=2):
    """A study whose complete trials took ``durations`` seconds, ``overlap`` of them running at once."""
    study = optuna.create_study()
    t0 = datetime.datetime(2026, 12, 7, 12, 0, 0)
    for k, seconds in enumerate(durations):
        start = t0 + datetime.timedelta(seconds=100 * (k // overlap))
        study.add_trial(optuna.trial.FrozenTrial(
            number=k, trial_id=k, state=TrialState.COMPLETE, value=0.5, values=None, datetime_start=start,
            datetime_complete=start + datetime.timedelta(seconds=seconds), params={}, distributions={},
            user_attrs={}, system_attrs={}, intermediate_values={}))
    return study


def test_the_estimate_is_the_lower_median_of_complete_trials_and_how_many_ran_at_once():
    assert Estimate.of(_study([10] * 4)) is None  # too few: the first trials hold each process's warm-up
    estimate = Estimate.of(_study([60, 50, 10, 10, 12, 9, 11, 10]))
    assert (estimate.trial_seconds, estimate.parallel) == (10, 2)
    # 24 unit runs and 3 refits over 2 processes, with a quarter more for the rest
    assert estimate.after_search(24, 3) == pytest.approx(1.25 * (12 * 10 + 2 * 10 * 1.3))


def test_the_search_stops_for_every_process_once_the_rest_would_not_fit():
    study = _study([10] * 6)
    set_budget(study, "100s", refits=3, trials=30)
    assert not search_may_go_on(study, EVALUATION)  # 100 s left < one trial and the 192.5 s the rest needs
    assert study.user_attrs[BUDGET_ATTR]["search_over"]
    set_budget(study, "10m", refits=3, trials=30)  # a new run of tune: a new budget, the search goes on
    assert search_may_go_on(study, EVALUATION) and not spent(study) and refits_fit(study)
    study.set_user_attr(BUDGET_ATTR, dict(study.user_attrs[BUDGET_ATTR], search_over=True))
    assert not search_may_go_on(study, EVALUATION)  # another process stopped it: so does this one


def test_a_spent_budget_starts_nothing_and_no_budget_limits_nothing():
    study = _study([10] * 6)
    set_budget(study, "100s", refits=3, trials=30, started=time.time() - 200)
    assert spent(study) and not refits_fit(study) and Budget.of(study).left() < 0
    assert not search_may_go_on(study, EVALUATION)
    set_budget(study, None, refits=3, trials=30)  # a tune without --timeout clears it
    assert Budget.of(study) is None and not spent(study) and refits_fit(study)
    assert search_may_go_on(study, EVALUATION)


def test_the_time_left_counts_the_search_the_confirmation_and_the_refits():
    study = _study([10] * 6)
    set_budget(study, None, refits=3, trials=10)
    assert time_left(study, EVALUATION, 6) == pytest.approx(2 * 10 + 1.25 * (12 * 10 + 2 * 13))
    # once the confirmation is planned, its runs left replace the most it could need
    assert time_left(study, EVALUATION, 10, runs_left=4) == pytest.approx(1.25 * (2 * 10 + 2 * 13))
    assert time_left(_study([10] * 2), EVALUATION, 2) is None
