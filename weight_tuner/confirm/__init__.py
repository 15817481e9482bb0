"""Confirmation stage: the search's top candidates against no weights, paired on units, raced, decided."""
