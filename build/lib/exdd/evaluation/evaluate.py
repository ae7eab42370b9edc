"""Evaluation of a fitted model on a labelled test split."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from exdd.data.readers import Sample, read_mask
from exdd.errors import DataError
from exdd.detector.model import ExDD, Prediction, data_fingerprint
from exdd.evaluation.metrics import compute_metrics
from exdd.evaluation.report import MetricsReport


def ground_truth(model: ExDD, samples: Sequence[Sample]) -> np.ndarray:
    """Masks (N, H, W) at the model's input size; normal images without a mask are empty."""
    h, w = model.data.input_size
    return np.stack([
        read_mask(s.mask, h, w, model.data.mask_threshold, image_path=s.image) for s in samples
    ])


def evaluate(model: ExDD, samples: Sequence[Sample],
             prediction: Prediction | None = None) -> dict[str, Any]:
    """Image/pixel AUROC, AUPRO, AP, F1-max (+ curves) of ``model`` on ``samples``."""
    if not samples:
        raise DataError("the test split is empty")
    masks = ground_truth(model, samples)
    pred = prediction or model.predict([s.image for s in samples])
    labels = np.array([s.label for s in samples])
    return compute_metrics(pred.scores, labels, pred.maps, masks)


def benchmark_report(model: ExDD, samples: Sequence[Sample],
                     bench_hash: str | None = None) -> MetricsReport:
    """``evaluate()`` as the ``metrics.json`` record, named for the split it was made on
    (its fingerprint unless the caller already has it)."""
    return MetricsReport(**evaluate(model, samples),
                         benchmark_hash=bench_hash or data_fingerprint(samples))
