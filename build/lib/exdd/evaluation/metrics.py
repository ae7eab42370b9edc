"""Detection and localisation metrics, as reported for MVTec AD / KSDD2 in the literature.

Image level: AUROC, average precision, F1-max (with its threshold), ROC and PR curves.
Pixel level: AUROC over all test pixels and AUPRO up to FPR 0.3 (MVTec AD definition).

Both pixel metrics come from the same three score histograms (normal-pixel counts,
defect-pixel counts and per-region overlap weights), so the maps are read twice and never
sorted as one array unless the set is small enough for the exact path (one bin per
distinct score value, which reproduces the sorted-pixel definitions exactly).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from scipy import ndimage
from sklearn.metrics import (
    average_precision_score,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)

from exdd.errors import DataError

# AUPRO integrates the per-region-overlap curve over FPR in [0, 0.3] (Bergmann et al., 2021).
AUPRO_FPR_LIMIT = 0.3
# Curves stored in metrics.json / MLflow are thinned to this many points.
CURVE_POINTS = 200
# Up to this many test pixels the pixel metrics are exact (one bin per distinct score).
EXACT_PIXEL_LIMIT = 10_000_000
# Above it, scores fall into this many equal-width bins (ties only within a bin).
HISTOGRAM_BINS = 1 << 16
# 8-connectivity for defect regions, as in the MVTec AD evaluation code.
REGION_STRUCTURE = np.ones((3, 3), dtype=int)

MapsLike = Sequence[np.ndarray] | np.ndarray
# One batch of pixels: bin index, defect flag, overlap weight, region count, bin count.
Chunk = tuple[np.ndarray, np.ndarray, np.ndarray, int, int]


def compute_metrics(image_scores: np.ndarray, image_labels: np.ndarray,
                    maps: MapsLike, masks: MapsLike) -> dict[str, Any]:
    """All metrics of one test set, JSON-ready (plain floats, curves of <= 200 points).

    ``maps`` and ``masks`` are (N, H, W) arrays or lists of H x W arrays (sizes may
    differ between images, never between an image's map and its mask).
    """
    scores, labels = _image_inputs(image_scores, image_labels)
    if len(maps) != len(scores) or len(masks) != len(scores):
        raise DataError(f"got {len(scores)} image scores but {len(maps)} maps and "
                        f"{len(masks)} masks")
    result = image_metrics(scores, labels)
    result.update(pixel_metrics(maps, masks))
    result["n_test"] = int(len(scores))
    return result


def image_metrics(image_scores: np.ndarray, image_labels: np.ndarray) -> dict[str, Any]:
    """Image AUROC, AP, F1-max with its threshold, and thinned ROC / PR curves."""
    scores, labels = _image_inputs(image_scores, image_labels)
    precision, recall, thresholds = precision_recall_curve(labels, scores)
    # The last PR point (recall 0, precision 1) has no threshold; leave it out of the max.
    p, r = precision[:-1], recall[:-1]
    denom = p + r
    f1 = np.divide(2 * p * r, denom, out=np.zeros_like(denom), where=denom > 0)
    best = int(np.argmax(f1))
    fpr, tpr, _ = roc_curve(labels, scores)
    return {
        "image_auroc": float(roc_auc_score(labels, scores)),
        "image_ap": float(average_precision_score(labels, scores)),
        "f1_max": float(f1[best]),
        "threshold": float(thresholds[best]),
        "roc": _points("fpr", fpr, "tpr", tpr),
        "pr": _points("recall", recall, "precision", precision),
    }


def pixel_metrics(maps: MapsLike, masks: MapsLike, *, exact_limit: int = EXACT_PIXEL_LIMIT,
                  bins: int = HISTOGRAM_BINS) -> dict[str, float]:
    """Pixel AUROC over all pixels and AUPRO (FPR <= 0.3, normalised to [0, 1])."""
    pairs = _pixel_inputs(maps, masks)
    n_pixels = sum(m.size for m, _ in pairs)
    chunks = (_exact_chunks(pairs) if n_pixels <= exact_limit
              else _binned_chunks(pairs, bins))
    normal, defect, overlap, n_regions = _histograms(chunks)
    n_normal, n_defect = normal.sum(), defect.sum()
    if n_defect == 0:
        raise DataError("the ground-truth masks hold no defect pixels: pixel AUROC and AUPRO "
                        "need at least one defect region")
    if n_normal == 0:
        raise DataError("the ground-truth masks cover every pixel: pixel AUROC needs "
                        "normal pixels too")
    # Sweep the threshold from the highest score down: cumulative rates per bin.
    fpr = np.concatenate([[0.0], np.cumsum(normal[::-1])]) / n_normal
    tpr = np.concatenate([[0.0], np.cumsum(defect[::-1])]) / n_defect
    pro = np.concatenate([[0.0], np.cumsum(overlap[::-1])]) / n_regions
    return {
        "pixel_auroc": float(np.trapezoid(tpr, fpr)),
        "aupro": float(_area_up_to(fpr, pro, AUPRO_FPR_LIMIT) / AUPRO_FPR_LIMIT),
    }


def region_weights(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Per-pixel 1 / (area of its connected defect region), and the number of regions.

    Summing these weights over the pixels above a threshold gives the sum of the
    regions' overlap ratios, i.e. PRO times the number of regions.
    """
    labelled, n = ndimage.label(mask, structure=REGION_STRUCTURE)
    areas = np.bincount(labelled.ravel(), minlength=n + 1).astype(np.float64)
    inverse = np.zeros(n + 1)
    inverse[1:] = 1.0 / areas[1:]
    return inverse[labelled], int(n)


def _exact_chunks(pairs: list[tuple[np.ndarray, np.ndarray]]) -> Iterator[Chunk]:
    """One chunk of all pixels, binned by distinct score value (exact curves)."""
    values = np.concatenate([m.ravel() for m, _ in pairs])
    distinct, index = np.unique(values, return_inverse=True)
    del values
    weights, regions = zip(*(region_weights(k) for _, k in pairs))
    yield (index.ravel(), np.concatenate([k.ravel() for _, k in pairs]),
           np.concatenate([w.ravel() for w in weights]), sum(regions), len(distinct))


def _binned_chunks(pairs: list[tuple[np.ndarray, np.ndarray]], bins: int) -> Iterator[Chunk]:
    """One chunk per image, scores in ``bins`` equal-width bins over the global range."""
    lo = min(float(m.min()) for m, _ in pairs)
    hi = max(float(m.max()) for m, _ in pairs)
    scale = bins / (hi - lo) if hi > lo else 0.0
    for amap, mask in pairs:
        index = np.minimum(((amap.ravel() - lo) * scale).astype(np.int64), bins - 1)
        weights, regions = region_weights(mask)
        yield index, mask.ravel(), weights.ravel(), regions, bins


def _histograms(chunks: Iterator[Chunk]) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Per-bin normal count, defect count and overlap weight, plus the region count."""
    normal = defect = overlap = None
    n_regions = 0
    for index, mask, weights, regions, bins in chunks:
        if normal is None:
            normal, defect, overlap = np.zeros(bins), np.zeros(bins), np.zeros(bins)
        normal += np.bincount(index[~mask], minlength=bins)
        defect += np.bincount(index[mask], minlength=bins)
        overlap += np.bincount(index[mask], weights=weights[mask], minlength=bins)
        n_regions += regions
    return normal, defect, overlap, n_regions


def _area_up_to(x: np.ndarray, y: np.ndarray, x_max: float) -> float:
    """Trapezoidal area under (x, y) for x <= x_max; x is non-decreasing from 0."""
    k = int(np.searchsorted(x, x_max, side="right"))
    xs, ys = x[:k], y[:k]
    if k < len(x):
        t = (x_max - x[k - 1]) / (x[k] - x[k - 1])
        xs = np.append(xs, x_max)
        ys = np.append(ys, y[k - 1] + t * (y[k] - y[k - 1]))
    return float(np.trapezoid(ys, xs))


def _points(x_name: str, x: np.ndarray, y_name: str, y: np.ndarray) -> list[dict[str, float]]:
    """At most CURVE_POINTS evenly spaced points, always keeping both ends."""
    index = np.arange(len(x))
    if len(x) > CURVE_POINTS:
        index = np.unique(np.linspace(0, len(x) - 1, CURVE_POINTS).round().astype(int))
    return [{x_name: float(x[i]), y_name: float(y[i])} for i in index]


def _image_inputs(image_scores: np.ndarray,
                  image_labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(image_scores, dtype=np.float64).ravel()
    labels = np.asarray(image_labels).ravel()
    if len(scores) != len(labels):
        raise DataError(f"got {len(scores)} image scores but {len(labels)} labels")
    if not np.all(np.isfinite(scores)):
        raise DataError("image scores contain NaN or infinity")
    if not np.isin(labels, (0, 1)).all():
        raise DataError(f"image labels must be 0 (normal) or 1 (defect), got {np.unique(labels)}")
    labels = labels.astype(int)
    if len(np.unique(labels)) < 2:
        kind = "defective" if len(labels) and labels[0] == 1 else "normal"
        raise DataError(f"the test set holds only {kind} images ({len(labels)}): image "
                        "metrics need both normal and defective images")
    return scores, labels


def _pixel_inputs(maps: MapsLike, masks: MapsLike) -> list[tuple[np.ndarray, np.ndarray]]:
    if len(maps) != len(masks):
        raise DataError(f"got {len(maps)} anomaly maps but {len(masks)} masks")
    if len(maps) == 0:
        raise DataError("no anomaly maps to evaluate")
    pairs = []
    for i, (amap, mask) in enumerate(zip(maps, masks)):
        amap, mask = np.asarray(amap), np.asarray(mask).astype(bool)
        if amap.ndim != 2 or amap.shape != mask.shape:
            raise DataError(f"image {i}: anomaly map shape {amap.shape} does not match "
                            f"mask shape {mask.shape}")
        if not np.all(np.isfinite(amap)):
            raise DataError(f"image {i}: anomaly map contains NaN or infinity")
        pairs.append((amap, mask))
    return pairs
