"""The study's recommendation as typed records: what the confirmation decides and every view reads.

It is stored as the study's ``recommendation`` user attr, a JSON object (:func:`.storage.store_recommendation`).
These classes are its only reader and writer: a field has one name and one default everywhere, and a
record stored by an earlier version, without a later field, reads with that field's default here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


def _known(cls, d: dict) -> dict:
    """The keys of ``d`` that are fields of ``cls``: a key a later version added is not an error here."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in d.items() if k in names}


@dataclass(frozen=True)
class Difference:
    """A candidate's paired difference to no weights: its mean and interval over ``n_units`` units."""

    mean: float
    ci_low: float
    ci_high: float
    n_units: int

    def to_dict(self) -> dict:
        """The stored form."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Difference":
        """The record of a stored difference."""
        return cls(float(d["mean"]), float(d["ci_low"]), float(d["ci_high"]), int(d["n_units"]))


@dataclass(frozen=True)
class Candidate:
    """One row of the confirmation: the unweighted model, thresholds or a trial's weights."""

    candidate: str  # "unweighted", "thresholds" or "trial N"
    kind: str  # "unweighted", "thresholds" or "weights"
    mean: float  # mean important_f1 over the units it ran
    diff: Difference
    trial: int | None = None
    class_weights: dict[str, float] | None = None  # as trained (normalised)
    scheme: str | None = None
    stopped_after: int | None = None  # units run before the race stopped it
    per_class: dict[str, float] | None = None

    def to_dict(self) -> dict:
        """The stored form."""
        return dict(dataclasses.asdict(self), diff=self.diff.to_dict())

    @classmethod
    def from_dict(cls, d: dict) -> "Candidate":
        """The record of a stored candidate row."""
        return cls(**dict(_known(cls, d), diff=Difference.from_dict(d["diff"])))


@dataclass(frozen=True)
class Deployed:
    """What ``predict --study`` can use for the recommended configuration, and which by default."""

    default: str  # "refit", "ensemble" or "single"
    candidate: str
    calibration: dict | None = None  # a posthoc.Calibration's dict, with what it was fitted on
    members: tuple[dict, ...] = ()  # the ensemble: each member's artifact, unit and training size
    ensemble_trained_on: str = "each member: the unit's training folds of the non-test chunks"
    single: dict = field(default_factory=dict)  # the search's model: trial, train_class_counts, trained_on
    refit: dict | None = None  # once made: models, config, train_lines, test_important_f1, ...

    def with_refit(self, entry: dict) -> "Deployed":
        """These models with ``entry``'s refits made, and the default."""
        return dataclasses.replace(self, refit=entry, default="refit")

    def to_dict(self) -> dict:
        """The stored form."""
        return {"default": self.default, "candidate": self.candidate, "calibration": self.calibration,
                "ensemble": {"members": list(self.members), "trained_on": self.ensemble_trained_on},
                "single": self.single, "refit": self.refit}

    @classmethod
    def from_dict(cls, d: dict) -> "Deployed":
        """The record of a stored ``deployed`` entry."""
        ensemble = d.get("ensemble") or {}
        return cls(d["default"], d["candidate"], d.get("calibration"), tuple(ensemble.get("members") or ()),
                   ensemble.get("trained_on", cls.ensemble_trained_on), d.get("single") or {}, d.get("refit"))


@dataclass(frozen=True)
class Recommendation:
    """The decision of a confirmation, with everything the views, export and ``predict`` read."""

    decision: str  # "weights", "thresholds" or "no_weights"
    candidate: str  # the recommended candidate's name ("unweighted" for no weights)
    diff_vs_unweighted: Difference
    level: float
    interval: str  # how the interval was computed
    candidates: tuple[Candidate, ...]  # the unweighted row first
    class_weights: dict[str, float] | None  # what to paste; None: no weights
    trial: int | None  # the recommended trial, or the unweighted one; None when the study has none
    n_units: int
    folds: int
    repeats: int
    design: str = "confirm"
    units_by: str = "chunk"  # what one fold held whole: chunks, or volumes or journals
    test_train_ratio: float = 1.0
    multipliers: dict[str, float] | None = None  # a thresholds decision's, Misc's = 1
    finished_trials: int | None = None  # the search's finished trials when it was decided
    confirmation_study: str | None = None
    deployed: Deployed | None = None  # None: a study that kept no confirmation models
    # the gain this design finds 80% of the time at the noise measured: {"gain", "power", "sd", "df", "n_units"}
    detectable: dict | None = None
    # what a spent --timeout cut short: {"timeout", "trials", "trials_asked", "runs_done", "runs_planned"}
    time_limited: dict | None = None

    @property
    def default_model(self) -> str:
        """The model ``predict --study`` uses without ``--use``."""
        return self.deployed.default if self.deployed else "single"

    @property
    def challengers(self) -> tuple[Candidate, ...]:
        """Every candidate but the unweighted model."""
        return self.candidates[1:]

    def row(self, name: str) -> Candidate | None:
        """The candidate row called ``name``."""
        return next((r for r in self.candidates if r.candidate == name), None)

    def replace(self, **changes: Any) -> "Recommendation":
        """A copy with ``changes``."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """The stored form (a JSON object)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out.update(diff_vs_unweighted=self.diff_vs_unweighted.to_dict(),
                   candidates=[r.to_dict() for r in self.candidates],
                   deployed=self.deployed.to_dict() if self.deployed else None)
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "Recommendation":
        """The record of a stored recommendation."""
        return cls(**dict(_known(cls, d), diff_vs_unweighted=Difference.from_dict(d["diff_vs_unweighted"]),
                          candidates=tuple(Candidate.from_dict(r) for r in d["candidates"]),
                          deployed=Deployed.from_dict(d["deployed"]) if d.get("deployed") else None))
