"""What a fit produces: the one record the model predicts from and model I/O writes.

The model builds it at fit and scores from it; exdd.detector.modelio saves and loads it
without knowing the model, so neither module needs the other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from exdd import __version__
from exdd.detector.settings import DataConfig, ModelConfig


@dataclass(frozen=True, eq=False)
class FittedState:
    """The settings a model was fitted with (``data`` with its input size resolved), the
    projection, both banks with their distance scales tau, the patch grid, and the content
    hashes of the images the banks came from; ``selection``: what fit measured when it chose
    the scoring rules (exdd.detector.selection), None when they were given."""

    model: ModelConfig
    data: DataConfig
    projection: np.ndarray
    bank_normal: np.ndarray
    bank_defect: np.ndarray
    grid: tuple[int, int]
    tau_normal: float
    tau_defect: float
    data_hashes: dict[str, str]
    selection: dict[str, Any] | None = None
    exdd_version: str = __version__  # the exdd that fitted it (a re-save keeps it)
