"""A nightly run's outcome, ``<review.outcomes_dir>/<run_id>.json`` in the line workspace.

Written once per run by the pipeline's report step, read by ``exdd outcomes``, the
review dashboard and the line benches; it lives in the line layer so that every reader
can use the record the writer uses. ``status`` says how the night ended: published,
pinned (the candidate passed but an operator's rollback pinned the line), gate_failed,
intake_failed or no_new_data.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from exdd.errors import DataError
from exdd.fsutil import write_text_atomic

Status = Literal["published", "pinned", "gate_failed", "intake_failed", "no_new_data"]


class GateOutcome(BaseModel):
    """The gate's verdict: ``passed`` is None when the gate did not run."""

    passed: bool | None
    reasons: list[str]


class Outcome(BaseModel):
    """What one night did, in counts, figures and the champion it left in service."""

    model_config = ConfigDict(extra="forbid")

    run_id: str
    line: str
    started: str
    finished: str
    status: Status
    batch: str
    n_total: int
    n_accepted: int
    n_quarantined: int
    n_held: int = 0  # files held with a failed batch
    drift: list[dict[str, Any]] = []  # intake drift events, e.g. a size change
    metrics: dict[str, float] = {}  # the candidate's benchmark figures; empty: none trained
    gate: GateOutcome
    model_hash: str | None = None
    champion_version: int | None = None
    new_champion: bool = False
    published_tag: str | None = None
    scores_dir: str | None = None  # workspace-relative
    n_scored: int = 0
    n_flagged: int = 0
    pinned: str | None = None  # the pin, described
    mlflow_run_id: str | None = None

    @staticmethod
    def path(outcomes_dir: Path, run_id: str) -> Path:
        """Where the outcome of ``run_id`` lives in an outcomes folder."""
        return Path(outcomes_dir) / f"{run_id}.json"

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def write(self, outcomes_dir: Path) -> Path:
        path = self.path(outcomes_dir, self.run_id)
        write_text_atomic(path, json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n")
        return path

    @classmethod
    def from_json(cls, raw: Any, source: object) -> Outcome:
        """An outcome parsed from ``source`` (a file); a broken one is a DataError naming it."""
        try:
            return cls.model_validate(raw)
        except ValidationError as err:
            raise DataError.invalid(source, "a run outcome", err) from None
