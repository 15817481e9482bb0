"""The objective: one trial samples weights, trains, reports every epoch and keeps its metrics.

Besides the value it returns, a trial stores ``class_weights`` (as given), ``class_weights_trained``
(normalised), every validation metric as ``val_<name>``, its scheme, its dashboard note and, when it
is the best so far or the unweighted baseline, its saved model.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import numpy as np
import optuna
from optuna.trial import TrialState

from ..config import ModelConfig, validate_class_weights
from ..errors import NonFiniteLossError, WeightTunerError
from ..folds import make_units, unit_data
from ..notes import metrics_markdown, save_live_note, stopped_markdown
from ..paths import bundle_paths, model_path
from ..schemes import is_unweighted
from ..space import DEFAULT_EVALUATION, OBJECTIVES, SearchSpace
from ..retries import abandon_trial, requeue
from ..storage import FINISHED, trial_score
from ..unitrun import UNIT_KEYS, run_unit

logger = logging.getLogger(__name__)


class TrialTimeoutError(WeightTunerError):
    """A trial ran past ``--trial-timeout`` (checked after each epoch)."""


class SurplusTrial(Exception):
    """Another worker already holds the last of the requested trials."""


class Objective:
    """One trial: sample weights, train, report each epoch, store every metric on the trial."""

    def __init__(self, prepared, space: SearchSpace, base_config: ModelConfig, models_dir: Path | None, *,
                 trial_timeout: float | None = None, n_trials: int | None = None,
                 objectives: list[str] | None = None, evaluation: dict | None = None, stop=None):
        self.objectives = objectives or ["important_f1"]
        self.stop = stop  # a signals.StopGuard: checked between training batches
        self._should_stop = stop.check if stop is not None else None
        self._given_back: set[int] = set()
        self.evaluation = evaluation or dict(DEFAULT_EVALUATION)
        self.trial_timeout = trial_timeout
        self.n_trials = n_trials
        self.prepared = prepared
        self.space = space
        self.base_config = base_config
        self.models_dir = models_dir
        self.cache = prepared.models  # one compiled model, re-initialised for each trial (they run one at a time)

    def __call__(self, trial: optuna.Trial) -> float:
        config = self._trial_config(trial)
        if self.stop is not None:
            self.stop.abandon = lambda: self._abandon(trial)
        if self.evaluation["design"] == "cv":
            return self._cross_validated(trial, config)
        model, stats = self._train(trial, config)
        for key, value in stats.items():
            trial.set_user_attr(f"val_{key}", value)
        save_live_note(trial, metrics_markdown(trial, stats))
        self._keep_model(trial, model, config, stats["important_f1"])
        values = [stats[OBJECTIVES[o]] for o in self.objectives]
        return values[0] if len(values) == 1 else tuple(values)

    def _trial_config(self, trial: optuna.Trial) -> ModelConfig:
        """The trial's model config (sampled, or an enqueued scheme's), its weights recorded both ways."""
        from ..train import trained_weights

        given = trial.user_attrs.get("weights_given")
        if given is not None:  # a named scheme trains with its weights exactly as the guide gives them
            given = validate_class_weights(given, "weights_given")
        # An enqueued trial gets its fixed params here; one outside the space samples no weights at all.
        config = self.space.suggest(trial, self.base_config,
                                    fixed_weights=given if trial.user_attrs.get("outside_space") else None)
        self._check_surplus(trial)
        if given is not None:
            config = config.replace(class_weights=given)
        if "scheme" not in trial.user_attrs:
            trial.set_user_attr("scheme", "search")
        trial.set_user_attr("class_weights", config.class_weights)
        trial.set_user_attr("class_weights_trained", trained_weights(self.prepared, config))
        return config

    def _train(self, trial: optuna.Trial, config: ModelConfig):
        """Train on the search's split, reporting every epoch (pruning, the timeout); ``(model, val stats)``.

        A stopped trial says why in its user attrs and note; an interrupted one gives its parameters back.
        """
        from ..train import train_model

        epochs_run = 0
        last: dict | None = None
        t0 = time.perf_counter()

        def report(epoch: int, stats: dict) -> None:
            nonlocal epochs_run, last
            epochs_run, last = epoch + 1, stats
            if len(self.objectives) == 1:  # Optuna prunes single-objective studies only
                trial.report(stats[OBJECTIVES[self.objectives[0]]], epochs_run)
            elapsed = time.perf_counter() - t0
            if self.trial_timeout is not None and elapsed > self.trial_timeout and epochs_run < config.epochs:
                raise TrialTimeoutError(f"trial ran {elapsed:.1f}s, over --trial-timeout {self.trial_timeout:g}s, "
                                        f"after epoch {epochs_run}")
            if len(self.objectives) == 1 and trial.should_prune():
                raise optuna.TrialPruned(f"pruned after epoch {epochs_run}: "
                                         f"val important_f1 {stats['important_f1']:.4f}")

        try:
            model, history = train_model(self.prepared, config, report, should_stop=self._should_stop,
                                         cache=self.cache)
        except optuna.TrialPruned as exc:
            trial.set_user_attr("pruned_reason", str(exc))
            save_live_note(trial, stopped_markdown(trial, f"Pruned by {type(trial.study.pruner).__name__}",
                                              epochs_run, last))
            raise
        except (NonFiniteLossError, TrialTimeoutError) as exc:
            trial.set_user_attr("fail_reason", str(exc))
            save_live_note(trial, stopped_markdown(trial, f"Failed ({exc})", epochs_run, last))
            raise
        except KeyboardInterrupt as exc:
            trial.set_user_attr("fail_reason", f"interrupted ({type(exc).__name__})")
            self._give_back(trial)  # the next run retries these parameters
            raise
        finally:
            trial.set_user_attr("epochs_run", epochs_run)
            trial.set_user_attr("seconds", round(time.perf_counter() - t0, 3))
        return model, history[-1]["val"]

    def _cross_validated(self, trial: optuna.Trial, config: ModelConfig) -> float:
        """The cv design: score the trial on every unit, in an order shuffled per trial, reporting each.

        ``trial.report(value, step=unit index)`` feeds Optuna's WilcoxonPruner, which compares the
        trial paired with the best one; when it prunes, the mean so far is returned (as its docs
        advise, so the sampler still learns) and ``pruned_at_unit`` is recorded.
        """
        units = make_units(self.evaluation["folds"], self.evaluation["repeats"])
        order = np.random.default_rng([trial.number, 17]).permutation(len(units))
        t0 = time.perf_counter()
        scores: dict[str, dict] = {}
        try:
            for i in order:
                unit = units[int(i)]
                res = run_unit(unit_data(self.prepared, unit, self.evaluation["folds"], self.evaluation["units_by"]),
                               config, unit,
                               should_stop=self._should_stop, cache=self.cache)
                scores[unit.key] = res["scores"]
                trial.set_user_attr("unit_scores", scores)
                trial.report(res["scores"]["important_f1"], step=int(i))
                if self.trial_timeout is not None and time.perf_counter() - t0 > self.trial_timeout:
                    raise TrialTimeoutError(f"trial ran {time.perf_counter() - t0:.1f}s, over --trial-timeout "
                                            f"{self.trial_timeout:g}s, after {len(scores)} units")
                if len(scores) < len(units) and trial.should_prune():
                    trial.set_user_attr("pruned_at_unit", len(scores))
                    break
        except KeyboardInterrupt as exc:
            trial.set_user_attr("fail_reason", f"interrupted ({type(exc).__name__})")
            self._give_back(trial)
            raise
        except TrialTimeoutError as exc:
            trial.set_user_attr("fail_reason", str(exc))
            raise
        finally:
            trial.set_user_attr("seconds", round(time.perf_counter() - t0, 3))
        value = float(np.mean([v["important_f1"] for v in scores.values()]))
        for key in UNIT_KEYS:
            trial.set_user_attr(f"val_{key}", float(np.mean([v[key] for v in scores.values()])))
        trial.set_user_attr("units_run", len(scores))
        return value

    def _check_surplus(self, trial: optuna.Trial) -> None:
        """Give the trial back if finished and running trials numbered before it already reach the total."""
        if self.n_trials is None:
            return
        ahead = [t for t in trial.study.get_trials(deepcopy=False, states=FINISHED + (TrialState.RUNNING,))
                 if t.number < trial.number]
        if len(ahead) < self.n_trials:
            return
        trial.set_user_attr("surplus", True)
        self._give_back(trial)
        raise SurplusTrial(f"surplus: {len(ahead)} trials were already finished or running")

    def _abandon(self, trial: optuna.Trial) -> None:
        abandon_trial(trial)

    def _give_back(self, trial: optuna.Trial) -> None:
        """Re-enqueue a trial that will not finish, so its parameters (an enqueued scheme too) are not lost."""
        if trial.number in self._given_back:
            return
        self._given_back.add(trial.number)
        requeue(trial.study, trial)  # already suggested: an enqueued trial's fixed params

    def _keep_model(self, trial: optuna.Trial, model, config: ModelConfig, value: float) -> None:
        """Save this trial's model if it is the best so far or the unweighted baseline; drop superseded ones."""
        if self.models_dir is None:
            return
        from ..bundles import save_bundle

        done = trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        # Strictly better: on a tie the earlier trial stays best, as max() over trials in order picks it.
        is_best = value > max((trial_score(t) for t in done), default=-math.inf)
        if is_best or is_unweighted(trial):
            save_bundle(model, self.prepared.featurizer, config, model_path(self.models_dir, trial.number),
                        self.prepared.label_map)
        if not is_best:
            return
        keep = {t.number for t in done if is_unweighted(t)}
        for t in done:  # the previous best is superseded
            if t.number not in keep:
                for p in bundle_paths(model_path(self.models_dir, t.number)):
                    p.unlink(missing_ok=True)
