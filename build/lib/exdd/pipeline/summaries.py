"""What one nightly step tells the next: the typed summaries that travel in Airflow XCom.

A step of ``exdd.pipeline.nightly`` returns one of these; at a task boundary the DAG
stores ``model_dump(mode="json")`` (plain JSON, as XCom needs) and the next task
re-validates it with ``from_xcom``, so a field renamed on one side fails at the boundary, loudly, instead of a
``KeyError`` two tasks later. Artifacts never travel here: they stay in the workspace.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict

from exdd.fsutil import write_text_atomic

S = TypeVar("S", bound="StepSummary")


class StepSummary(BaseModel):
    """A step's result: immutable, no unknown fields, JSON round-trip exact."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @classmethod
    def from_xcom(cls: type[S], value: S | dict[str, Any] | None) -> S | None:
        """The summary an upstream task pushed (None when that task was skipped)."""
        return None if value is None else cls.model_validate(value)


class IntakeSummary(StepSummary):
    """validate: what the night's intake filed where; ``report`` is its report folder."""

    batch: str
    n_total: int
    n_accepted: int
    n_quarantined: int
    n_held: int = 0
    failed_fraction: float = 0.0
    passed: bool
    drift: list[dict[str, Any]] = []
    report: str | None = None

    def problem(self) -> str:
        """Why this intake does not allow training."""
        if self.n_total == 0:
            return "the inbox held no new files"
        failed = self.n_quarantined - self.n_held
        return (f"intake of batch {self.batch} failed ({failed} of {self.n_total} "
                f"file(s) failed; the batch is held in quarantine until released)")


class SynthSummary(StepSummary):
    """synthesize: the synthetic defect set and its size."""

    synthetic: str
    n_synthetic: int


class BanksSummary(StepSummary):
    """build_banks: the candidate's model hash and bank sizes."""

    model_hash: str
    bank_normal: int
    bank_defect: int
    n_train: int
    n_synthetic: int

    def write(self, path: Path) -> None:
        """Note the build in this run's state folder (a repeated step refits nothing)."""
        write_text_atomic(path, self.model_dump_json(indent=2) + "\n")

    @classmethod
    def read(cls, path: Path) -> BanksSummary | None:
        return cls.model_validate_json(path.read_bytes()) if path.is_file() else None


class EvalSummary(StepSummary):
    """evaluate: the candidate, the benchmark split and the figures measured on it."""

    model_hash: str
    benchmark_hash: str
    metrics: dict[str, float]


class GateSummary(StepSummary):
    """gate: the decision, its reasons, and the champion it was made against."""

    passed: bool
    reasons: list[str]
    metrics: dict[str, float]
    champion_metrics: dict[str, float] | None
    champion_version: int | None
    model_hash: str
    rejected_version: int | None
    mlflow_run_id: str | None


class PublishSummary(StepSummary):
    """publish: the champion's git tag, MLflow version and model hash."""

    tag: str
    version: int
    model_hash: str


class ScoreSummary(StepSummary):
    """score: the review folder (workspace-relative; None when nothing was scored, and
    ``reason`` says why) and its counts; ``unreadable`` is (image, why) per bad file."""

    scores_dir: str | None
    n_scored: int = 0
    n_flagged: int = 0
    model_version: int | None = None
    threshold: float | None = None
    reason: str | None = None
    unreadable: list[tuple[str, str]] = []
