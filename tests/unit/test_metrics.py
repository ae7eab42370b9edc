"""Metrics against sklearn and against direct, loop-by-definition reference computations."""

import json

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

from exdd.errors import DataError
from exdd.evaluation.metrics import (
    AUPRO_FPR_LIMIT,
    CURVE_POINTS,
    REGION_STRUCTURE,
    compute_metrics,
    image_metrics,
    pixel_metrics,
    region_weights,
)


def _scene(seed: int, n: int = 6, size: int = 24) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Random rectangles as defects; maps = noise plus a bump where the defects are."""
    rng = np.random.default_rng(seed)
    maps, masks = [], []
    for i in range(n):
        mask = np.zeros((size, size), bool)
        for _ in range(i % 3):  # some images normal, some with one or two regions
            y, x = rng.integers(0, size - 6, 2)
            h, w = rng.integers(2, 6, 2)
            mask[y:y + h, x:x + w] = True
        maps.append(rng.random((size, size)).astype(np.float32) + 0.6 * mask)
        masks.append(mask)
    return maps, masks


def _reference_aupro(maps: list[np.ndarray], masks: list[np.ndarray]) -> float:
    """AUPRO by its definition: loop over thresholds and over every region."""
    regions = []  # (image index, boolean region)
    for i, mask in enumerate(masks):
        labelled, n = ndimage.label(mask, structure=REGION_STRUCTURE)
        regions += [(i, labelled == k) for k in range(1, n + 1)]
    normal = np.concatenate([m[~k] for m, k in zip(maps, masks)])
    fprs, pros = [0.0], [0.0]
    for t in np.unique(np.concatenate([m.ravel() for m in maps]))[::-1]:
        fprs.append(float(np.mean(normal >= t)))
        pros.append(float(np.mean([np.mean(maps[i][r] >= t) for i, r in regions])))
    fprs, pros = np.array(fprs), np.array(pros)
    keep = fprs <= AUPRO_FPR_LIMIT
    xs = np.append(fprs[keep], AUPRO_FPR_LIMIT)
    ys = np.append(pros[keep], np.interp(AUPRO_FPR_LIMIT, fprs, pros))
    return float(np.trapezoid(ys, xs) / AUPRO_FPR_LIMIT)


def test_image_metrics_match_sklearn_and_brute_force_f1() -> None:
    rng = np.random.default_rng(1)
    labels = np.array([0] * 30 + [1] * 20)
    scores = rng.normal(size=50) + labels
    got = image_metrics(scores, labels)
    assert got["image_auroc"] == pytest.approx(roc_auc_score(labels, scores))
    assert got["image_ap"] == pytest.approx(average_precision_score(labels, scores))
    f1s = {t: f1_score(labels, scores >= t) for t in np.unique(scores)}
    best = max(f1s.values())
    assert got["f1_max"] == pytest.approx(best)
    assert f1s[got["threshold"]] == pytest.approx(best)


def test_hand_computed_small_case() -> None:
    # Of the 4 normal/defect pairs, 3 are ranked correctly: AUROC 3/4.
    got = image_metrics(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1]))
    assert got["image_auroc"] == pytest.approx(3 / 4)
    # Threshold 0.35 flags {0.4, 0.35, 0.8}: precision 2/3, recall 1 -> F1 4/5.
    assert got["f1_max"] == pytest.approx(4 / 5)
    assert got["threshold"] == pytest.approx(0.35)


def test_pixel_auroc_exact_path_equals_sklearn() -> None:
    maps, masks = _scene(2)
    got = pixel_metrics(maps, masks)
    flat_maps = np.concatenate([m.ravel() for m in maps])
    flat_masks = np.concatenate([k.ravel() for k in masks])
    assert got["pixel_auroc"] == pytest.approx(roc_auc_score(flat_masks, flat_maps), abs=1e-12)


def test_aupro_equals_definition() -> None:
    maps, masks = _scene(3, n=5, size=16)
    assert pixel_metrics(maps, masks)["aupro"] == pytest.approx(_reference_aupro(maps, masks))


def test_binned_path_is_close_to_exact() -> None:
    maps, masks = _scene(4)
    exact = pixel_metrics(maps, masks)
    binned = pixel_metrics(np.stack(maps), np.stack(masks), exact_limit=0)
    assert binned["pixel_auroc"] == pytest.approx(exact["pixel_auroc"], abs=1e-3)
    assert binned["aupro"] == pytest.approx(exact["aupro"], abs=1e-3)


def test_aupro_perfect_random_and_inverted_maps() -> None:
    _, masks = _scene(5, n=12, size=32)
    perfect = [k.astype(np.float32) for k in masks]
    got = pixel_metrics(perfect, masks)
    assert got["aupro"] == pytest.approx(1.0) and got["pixel_auroc"] == pytest.approx(1.0)
    inverted = [1.0 - p for p in perfect]
    assert pixel_metrics(inverted, masks)["aupro"] == pytest.approx(0.0)
    rng = np.random.default_rng(6)
    noise = [rng.random(k.shape) for k in masks]
    # Scores independent of the masks: PRO(fpr) ~ fpr, so the normalised area ~ limit / 2.
    random_aupro = pixel_metrics(noise, masks)["aupro"]
    assert random_aupro == pytest.approx(AUPRO_FPR_LIMIT / 2, abs=0.04)
    assert random_aupro < got["aupro"]


def test_regions_are_8_connected_and_weighted_by_area() -> None:
    mask = np.zeros((6, 6), bool)
    mask[0, 0] = mask[1, 1] = True  # diagonal neighbours: one region of 2
    mask[4:6, 3:6] = True  # a second region of 6
    weights, n = region_weights(mask)
    assert n == 2
    assert weights[0, 0] == pytest.approx(1 / 2) and weights[5, 5] == pytest.approx(1 / 6)
    assert weights[mask].sum() == pytest.approx(n) and weights[~mask].sum() == 0


def test_compute_metrics_is_json_ready_with_thin_curves() -> None:
    rng = np.random.default_rng(7)
    n = 600
    labels = (np.arange(n) % 2).astype(int)
    scores = rng.normal(size=n) + labels
    masks = np.zeros((n, 8, 8), bool)
    masks[labels == 1, 2:5, 2:5] = True
    maps = rng.random((n, 8, 8)).astype(np.float32) + masks
    got = compute_metrics(scores, labels, maps, masks)
    assert set(got) >= {"image_auroc", "pixel_auroc", "aupro", "image_ap", "f1_max",
                        "threshold", "n_test", "roc", "pr"}
    assert got["n_test"] == n
    for key, first, last in (("roc", ("fpr", 0.0), ("tpr", 1.0)),
                             ("pr", ("recall", 1.0), ("recall", 0.0))):
        assert 2 <= len(got[key]) <= CURVE_POINTS
        assert got[key][0][first[0]] == pytest.approx(first[1])
        assert got[key][-1][last[0]] == pytest.approx(last[1])
    assert json.loads(json.dumps(got, allow_nan=False))["n_test"] == n


def test_degenerate_inputs_raise_data_error() -> None:
    maps = [np.zeros((4, 4))] * 2
    masks = [np.zeros((4, 4), bool)] * 2
    with pytest.raises(DataError, match="only normal"):
        compute_metrics(np.array([0.1, 0.2]), np.array([0, 0]), maps, masks)
    with pytest.raises(DataError, match="no defect pixels"):
        compute_metrics(np.array([0.1, 0.2]), np.array([0, 1]), maps, masks)
    with pytest.raises(DataError, match="does not match"):
        pixel_metrics([np.zeros((4, 4))], [np.zeros((4, 5), bool)])
    with pytest.raises(DataError, match="NaN"):
        image_metrics(np.array([np.nan, 1.0]), np.array([0, 1]))
    with pytest.raises(DataError, match="2 image scores but 3 maps"):
        compute_metrics(np.array([0.1, 0.2]), np.array([0, 1]), maps + maps[:1], masks)
