"""Study stage: the Optuna study over class weights, and the recommendation it ends with.

One module per job, in the order a study runs:

- :mod:`.space`: the search space (:class:`SearchSpace`), the study config and the named schemes;
- :mod:`.storage`: storage URLs, opening and checking them, and reading a study made by ``tune``;
- :mod:`.objective`: one trial (train, report each epoch, store metrics, keep the model);
- :mod:`.run`: create or resume a study and run trials, alone or as one of several workers;
- :mod:`.units`: the (repeat, fold) evaluation units that candidates are compared on;
- :mod:`.unitruns`: the candidates, and the confirmation's (candidate, unit) runs as trials of a
  companion study that every process of the study takes work from;
- :mod:`.recommend`: paired confirmation against no weights, the decision, the test check, notes;
- :mod:`.screen`: post-hoc screening of weight vectors into a study.
"""

from .members import recommended_model
from .recommend import confirm, confirmation_evaluation, final_test_evaluation
from .run import create_or_resume, join_study, open_study, run_trials, tune
from .space import METRIC_NAME, QUICK_MODEL, SearchSpace, StudyConfig, parse_objectives, warm_start_schemes
from .storage import (check_storage, completed_trials, finished_count, load_existing_study, open_storage,
                      stored_recommendation, trial_config, trial_score, tuned_study)

__all__ = ["METRIC_NAME", "QUICK_MODEL", "SearchSpace", "StudyConfig", "check_storage", "completed_trials",
           "confirm", "confirmation_evaluation", "create_or_resume", "final_test_evaluation", "finished_count", "join_study",
           "load_existing_study", "open_storage", "open_study", "parse_objectives", "recommended_model", "run_trials",
           "stored_recommendation", "trial_config", "trial_score", "tune", "tuned_study", "warm_start_schemes"]
