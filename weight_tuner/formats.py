"""How numbers are printed, once for every view (the terminal, notes, report, notebook, dashboard bar):
the same difference, interval or weight reads the same wherever a person meets it."""

from __future__ import annotations

from .config import CLASSES

VS_NONE = "vs no weights"  # the words for "paired difference to the unweighted model", everywhere


def score(x: float) -> str:
    """A score (F1, important_f1): 4 decimals."""
    return f"{x:.4f}"


def diff(x: float) -> str:
    """A difference of scores: signed, 4 decimals."""
    return f"{x:+.4f}"


def interval(lo: float, hi: float, level: float = 0.95) -> str:
    """A confidence interval of a difference: ``95% interval [-0.0958, +0.2222]``."""
    return f"{int(round(level * 100))}% interval [{diff(lo)}, {diff(hi)}]"


def diff_interval(d, level: float = 0.95) -> str:
    """:func:`interval` of a paired difference (a :class:`.records.Difference`)."""
    return interval(d.ci_low, d.ci_high, level)


def weight(x: float) -> str:
    """One class weight: 4 significant digits."""
    return f"{x:.4g}"


def weights(w: dict | None) -> str:
    """Class weights in class order, ``N / D / M`` (``-`` for none)."""
    return " / ".join(weight(w[c]) for c in CLASSES) if w else "-"
