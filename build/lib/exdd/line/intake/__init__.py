"""Line-data intake: validate new images with great-expectations, quarantine the bad.

``validate_inbox`` is the entry point (CLI: ``exdd validate``); see ``validate`` for the
data-set layout and ``journal`` for why a crash never loses or duplicates a file.
"""

from exdd.line.intake.validate import IntakeResult, validate_inbox

__all__ = ["IntakeResult", "validate_inbox"]
