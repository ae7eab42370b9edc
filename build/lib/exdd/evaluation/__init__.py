"""Evaluation: detection metrics on arrays, a model evaluated on a split, their curves."""
