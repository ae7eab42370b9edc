"""Scoring: the separable map upsampler against the two-step reference, batch scoring."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter

from exdd.detector.index import NearestNeighbourIndex
from exdd.detector.settings import ScoringSettings, SearchSettings
from exdd.detector.scoring import Bank, MapUpsampler, Scorer, top_k_mean


def upsample_then_smooth(patch_map: np.ndarray, size: tuple[int, int], sigma: float) -> np.ndarray:
    """The definition: bilinear upsampling to the input size, then a 2-D Gaussian filter."""
    t = torch.from_numpy(patch_map.astype(np.float32))[None, None]
    up = F.interpolate(t, size=size, mode="bilinear", align_corners=False)[0, 0].numpy()
    return gaussian_filter(up.astype(np.float64), sigma=sigma) if sigma > 0 else up


@pytest.mark.parametrize(("grid", "size", "sigma"), [
    ((32, 32), (256, 256), 4.0),   # the benchmark's Lite0 grid
    ((79, 28), (632, 224), 4.0),   # KSDD2 at the paper's input size
    ((8, 12), (64, 96), 0.0),      # no smoothing
    ((5, 7), (40, 56), 9.0),       # kernel wider than the map: reflection at both ends
])
def test_upsampler_equals_upsample_then_smooth(grid: tuple[int, int], size: tuple[int, int],
                                              sigma: float) -> None:
    rng = np.random.default_rng(0)
    maps = rng.gamma(2.0, 3.0, size=(3, *grid)).astype(np.float32)
    got = MapUpsampler(grid, size, sigma)(maps)
    assert got.shape == (3, *size) and got.dtype == np.float32
    for m, g in zip(maps, got):
        np.testing.assert_allclose(g, upsample_then_smooth(m, size, sigma), rtol=1e-5, atol=1e-5)


def test_top_k_mean_per_map() -> None:
    rng = np.random.default_rng(1)
    maps = rng.normal(size=(4, 10, 10))
    got = top_k_mean(maps, 0.05)
    want = [np.sort(m.ravel())[-5:].mean() for m in maps]
    np.testing.assert_allclose(got, want)
    assert top_k_mean(maps, 1e-9).tolist() == maps.reshape(4, -1).max(axis=1).tolist()


def brute_force_nn(queries: np.ndarray, bank: np.ndarray) -> np.ndarray:
    diff = queries[:, None, :].astype(np.float64) - bank[None, :, :]
    return np.sqrt((diff ** 2).sum(-1)).min(axis=1)


def test_calibrated_scorer_on_a_batch_matches_its_definition() -> None:
    """map = smooth(up(d_N / (d_P + tau_P))), score = mean of the map's top 1 %."""
    rng = np.random.default_rng(2)
    normal = rng.normal(size=(300, 16)).astype(np.float32)
    defect = (rng.normal(size=(60, 16)) + 3).astype(np.float32)
    patches = rng.normal(size=(3, 6, 5, 16)).astype(np.float32)
    patches[1, 2:4, 1:3] += 3  # a defect-like region in image 1
    rule = ScoringSettings(rule="calibrated", smoothing_sigma=2.0, top_k_fraction=0.01)
    tau_p = 1.5
    scorer = Scorer(
        Bank(normal, NearestNeighbourIndex(SearchSettings(use_gpu=False)).fit(normal), 1.0),
        Bank(defect, NearestNeighbourIndex(SearchSettings(use_gpu=False)).fit(defect), tau_p),
        MapUpsampler((6, 5), (24, 20), rule.smoothing_sigma), rule,
    )
    scores, maps = scorer(patches)
    assert maps.shape == (3, 24, 20)
    for img, score, amap in zip(patches, scores, maps):
        flat = img.reshape(-1, 16)
        ratio = brute_force_nn(flat, normal) / (brute_force_nn(flat, defect) + tau_p)
        want = upsample_then_smooth(ratio.reshape(6, 5), (24, 20), rule.smoothing_sigma)
        np.testing.assert_allclose(amap, want, rtol=1e-4, atol=1e-5)
        k = max(1, round(0.01 * want.size))
        assert score == pytest.approx(np.sort(want.ravel())[-k:].mean(), rel=1e-4)
    assert int(np.argmax(scores)) == 1


@pytest.mark.parametrize(("power", "pooling"), [(1.0, "max"), (0.5, "top_k"), (0.0, "max")])
def test_weighted_scorer_matches_its_definition(power: float, pooling: str) -> None:
    """map = smooth(up(d_N * (d_N / (d_N + d_P)) ** power)), score = max or top-k mean."""
    rng = np.random.default_rng(5)
    normal = rng.normal(size=(300, 16)).astype(np.float32)
    defect = (rng.normal(size=(60, 16)) + 3).astype(np.float32)
    patches = rng.normal(size=(3, 6, 5, 16)).astype(np.float32)
    patches[2, 1:3, 2:4] += 3
    rule = ScoringSettings(rule="weighted", defect_weight=power, image_score=pooling,
                           smoothing_sigma=2.0, top_k_fraction=0.02)
    scorer = Scorer(
        Bank(normal, NearestNeighbourIndex(SearchSettings(use_gpu=False)).fit(normal), 1.0),
        Bank(defect, NearestNeighbourIndex(SearchSettings(use_gpu=False)).fit(defect), 1.0),
        MapUpsampler((6, 5), (24, 20), rule.smoothing_sigma), rule,
    )
    scores, maps = scorer(patches)
    for img, score, amap in zip(patches, scores, maps):
        flat = img.reshape(-1, 16)
        d_n, d_p = brute_force_nn(flat, normal), brute_force_nn(flat, defect)
        evidence = d_n * (d_n / (d_n + d_p)) ** power
        want = upsample_then_smooth(evidence.reshape(6, 5), (24, 20), rule.smoothing_sigma)
        np.testing.assert_allclose(amap, want, rtol=1e-4, atol=1e-5)
        k = max(1, round(0.02 * want.size))
        expected = want.max() if pooling == "max" else np.sort(want.ravel())[-k:].mean()
        assert score == pytest.approx(expected, rel=1e-4)
    if power > 0:
        assert int(np.argmax(scores)) == 2


def test_reweighted_image_score_is_single_bank_only() -> None:
    assert ScoringSettings(single_bank=True, image_score="reweighted").image_score == "reweighted"
    with pytest.raises(ValueError, match="single-bank score"):
        ScoringSettings(image_score="reweighted")
