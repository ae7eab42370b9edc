"""``metrics.json``: a model's benchmark figures, as evaluation writes them and the gate,
the champion loader, the registry and ``dvc metrics`` read them.

One typed record owns the file name, the field set and the read/write, so a writer and
its readers cannot disagree on a key; the metric-name lists that reports and tags print
live here too.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from exdd.errors import DataError
from exdd.fsutil import write_text_atomic

METRICS_FILE = "metrics.json"
# The three figures a person reads first (run summaries, dashboards, line benches).
HEADLINE_METRICS = ("image_auroc", "pixel_auroc", "aupro")
# Every detection / localisation figure evaluate() reports.
REPORTED_METRICS = (*HEADLINE_METRICS, "image_ap", "f1_max")
# The numbers logged to MLflow and tagged on versions: the figures plus the F1 threshold.
SCALAR_METRICS = (*REPORTED_METRICS, "threshold")

Curve = list[dict[str, float]]


def scalar_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The numeric headline figures of an evaluate() result (or of version tags)."""
    return {k: float(metrics[k]) for k in SCALAR_METRICS if k in metrics}


class MetricsReport(BaseModel):
    """What ``evaluate()`` measured on one benchmark split (``benchmark_hash`` names it)."""

    model_config = ConfigDict(extra="forbid")

    image_auroc: float
    image_ap: float
    f1_max: float
    threshold: float
    roc: Curve
    pr: Curve
    pixel_auroc: float
    aupro: float
    n_test: int
    benchmark_hash: str | None = None

    def scalars(self) -> dict[str, float]:
        """The numeric headline figures (``SCALAR_METRICS``)."""
        return scalar_metrics(self.to_json())

    def to_json(self) -> dict:
        return self.model_dump(mode="json")

    def text(self) -> str:
        """The file's canonical text (sorted keys): equal metrics, equal bytes."""
        return json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n"

    def write(self, path: str | Path) -> Path:
        """Write to ``path`` (a file) atomically."""
        write_text_atomic(Path(path), self.text())
        return Path(path)

    def write_beside(self, model_dir: str | Path) -> Path:
        """Write ``metrics.json`` into a model directory (not one of its content files)."""
        return self.write(Path(model_dir) / METRICS_FILE)

    @classmethod
    def read(cls, path: str | Path) -> MetricsReport:
        """A metrics file; a missing, broken or foreign one is a one-line DataError."""
        path = Path(path)
        try:
            return cls.model_validate_json(path.read_bytes())
        except FileNotFoundError:
            raise DataError(f"{path}: no metrics file; evaluate the model first") from None
        except ValidationError as err:
            raise DataError.invalid(path, "a metrics file", err) from None

    @classmethod
    def beside(cls, model_dir: str | Path) -> MetricsReport | None:
        """The ``metrics.json`` of a model directory, None when it was never evaluated."""
        path = Path(model_dir) / METRICS_FILE
        return cls.read(path) if path.is_file() else None
