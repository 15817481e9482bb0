"""The user-facing errors: the CLI prints their message on one line and exits 2."""

from __future__ import annotations


class WeightTunerError(Exception):
    """A user-facing error: the CLI prints its message on one line and exits 2."""


class ConfigError(WeightTunerError):
    """A model or study configuration, or a command-line value, is invalid."""


class DataError(WeightTunerError):
    """The data (a corpus, a split, an input file, a saved model) cannot be used."""


class IntegrityError(DataError):
    """A stored file (a cache array, a model, a member, the split) does not match the digest written with it."""


class StudyError(WeightTunerError):
    """A storage or study problem (unknown study, unreadable storage, a study not made by tune)."""


class NonFiniteLossError(WeightTunerError):
    """Training produced a NaN or infinite loss."""
