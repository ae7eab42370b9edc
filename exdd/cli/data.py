"""Placeholder: filled in by its owner."""


def register(sub) -> None:
    """Add this module's sub-commands."""
