"""Scoring: the separable map upsampler against the two-step reference, batch scoring."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter

from exdd.detector.index import NearestNeighbourIndex
from exdd.detector.settings import ScoringSettings, SearchSettings
from exdd.detector.scoring import Bank, MapUpsampler, Scorer, dual_evidence, top_k_mean


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


DEFINITIONS = {  # the bounded dual rules, as docs/benchmarks.md writes them
    "weighted": lambda d_n, d_p, power: d_n * (d_n / (d_n + d_p)) ** power,
    "boosted": lambda d_n, d_p, power: d_n * np.maximum(1.0, 2 * d_n / (d_n + d_p)) ** power,
}


@pytest.mark.parametrize(("name", "power", "pooling"), [
    ("weighted", 1.0, "max"), ("weighted", 0.5, "top_k"), ("weighted", 0.0, "max"),
    ("boosted", 1.0, "top_k"), ("boosted", 2.0, "max")])
def test_bounded_dual_scorer_matches_its_definition(name: str, power: float, pooling: str
                                                    ) -> None:
    """map = smooth(up(rule(d_N, d_P))), score = max or top-k mean."""
    rng = np.random.default_rng(5)
    normal = rng.normal(size=(300, 16)).astype(np.float32)
    defect = (rng.normal(size=(60, 16)) + 3).astype(np.float32)
    patches = rng.normal(size=(3, 6, 5, 16)).astype(np.float32)
    patches[2, 1:3, 2:4] += 3
    rule = ScoringSettings(rule=name, defect_weight=power, boost_weight=power,
                           image_score=pooling,
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
        evidence = DEFINITIONS[name](d_n, d_p, power)
        want = upsample_then_smooth(evidence.reshape(6, 5), (24, 20), rule.smoothing_sigma)
        np.testing.assert_allclose(amap, want, rtol=1e-4, atol=1e-5)
        k = max(1, round(0.02 * want.size))
        expected = want.max() if pooling == "max" else np.sort(want.ravel())[-k:].mean()
        assert score == pytest.approx(expected, rel=1e-4)
    if power > 0:
        assert int(np.argmax(scores)) == 2


def test_boosted_rule_never_lowers_the_normal_distance() -> None:
    """A patch no nearer M_P than M_N (a defect of a kind M_P lacks) keeps PatchCore's d_N;
    nearer M_P it gains at most 2 ** boost_weight."""
    rng = np.random.default_rng(7)
    d_n, d_p = rng.gamma(2.0, 1.0, 1000), rng.gamma(2.0, 1.0, 1000)
    rule = ScoringSettings(rule="boosted", boost_weight=2.0)
    evidence = dual_evidence(d_n, d_p, 1.0, rule)
    far = d_p >= d_n
    np.testing.assert_allclose(evidence[far], d_n[far])
    assert np.all(evidence[~far] > d_n[~far]) and np.all(evidence <= 4.0 * d_n)


def test_reweighted_image_score_is_single_bank_only() -> None:
    assert ScoringSettings(single_bank=True, image_score="reweighted").image_score == "reweighted"
    with pytest.raises(ValueError, match="single-bank score"):
        ScoringSettings(image_score="reweighted")


def test_image_score_from_another_rules_map() -> None:
    """image_rule: the map is the rule's, the image score is pooled from image_rule's map."""
    rng = np.random.default_rng(9)
    normal = rng.normal(size=(200, 8)).astype(np.float32)
    defect = (rng.normal(size=(40, 8)) + 3).astype(np.float32)
    patches = rng.normal(size=(4, 5, 5, 8)).astype(np.float32)
    patches[3, 1:3, 1:3] += 3

    def scorer(rule: ScoringSettings) -> Scorer:
        index = NearestNeighbourIndex(SearchSettings(use_gpu=False))
        return Scorer(Bank(normal, index.fit(normal), 1.0),
                      Bank(defect, NearestNeighbourIndex(SearchSettings(use_gpu=False)).fit(
                          defect), 1.0), MapUpsampler((5, 5), (20, 20), 2.0), rule)

    mixed = scorer(ScoringSettings(rule="weighted", image_rule="boosted"))(patches)
    weighted = scorer(ScoringSettings(rule="weighted"))(patches)
    boosted = scorer(ScoringSettings(rule="boosted"))(patches)
    np.testing.assert_array_equal(mixed[1], weighted[1])
    np.testing.assert_array_equal(mixed[0], boosted[0])
    assert not np.array_equal(weighted[0], boosted[0])
