"""The pruned greedy coreset: seeded, edge cases, and as good as plain farthest-point."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from exdd.detector.settings import CoresetSettings
from exdd.errors import DataError
from exdd.detector.sampler import GreedyCoresetSampler, coverage_radius, pca_sketch

RADIUS_TOLERANCE = 1.05  # the sampler's coverage radius may exceed exact greedy's by 5%


def naive_greedy(points: np.ndarray, first: int, k: int) -> np.ndarray:
    """Textbook farthest-point traversal: one full pass over all points per pick."""
    chosen = [first]
    nearest = np.linalg.norm(points - points[first], axis=1)
    for _ in range(k - 1):
        pick = int(np.argmax(nearest))
        chosen.append(pick)
        nearest = np.minimum(nearest, np.linalg.norm(points - points[pick], axis=1))
    return np.array(chosen)


def uniform(n: int, dim: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (n, dim)).astype(np.float32)


def clustered(n: int, dim: int, seed: int) -> np.ndarray:
    """Gaussian blobs of different sizes and spreads, each flattened along some axes."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 12, n)
    centres = rng.normal(0, 6, (12, dim))
    spread = rng.uniform(0.2, 1.5, (12, dim)) * (np.arange(1, dim + 1) ** -0.7)
    return (centres[labels] + rng.standard_normal((n, dim)) * spread[labels]).astype(np.float32)


@pytest.mark.parametrize(
    ("data", "dim", "projection_dim"),
    [(uniform, 16, 128), (clustered, 32, 128), (clustered, 48, 12)],
)
def test_radius_within_tolerance_of_exact_greedy(data, dim: int, projection_dim: int) -> None:
    feats = data(3000, dim, seed=5)
    sampler = GreedyCoresetSampler(0.05, 2, CoresetSettings(projection_dim=projection_dim),
                                   progress=False)
    chosen = sampler.select(feats)
    reference = naive_greedy(sampler.project(feats), int(chosen[0]), chosen.size)
    fast, exact = coverage_radius(feats, chosen), coverage_radius(feats, reference)
    assert chosen.size == reference.size == 150
    assert fast <= RADIUS_TOLERANCE * exact, (fast, exact)


@pytest.mark.parametrize("max_groups", [1, 3])
def test_few_groups_per_step_still_pick_the_farthest_patch(max_groups: int) -> None:
    """Skipped groups go stale; the check before each pick must keep the result greedy."""
    feats = clustered(3000, 24, seed=11)
    sampler = GreedyCoresetSampler(0.04, 3, CoresetSettings(max_groups=max_groups, sketch_dim=6),
                                   progress=False)
    chosen = sampler.select(feats)
    reference = naive_greedy(feats, int(chosen[0]), chosen.size)
    assert np.isin(chosen, reference).mean() >= 0.95  # same members but for near-ties
    assert coverage_radius(feats, chosen) <= RADIUS_TOLERANCE * coverage_radius(feats, reference)


def test_sketch_distances_never_exceed_true_distances() -> None:
    feats = clustered(400, 32, seed=2)
    sketch = pca_sketch(feats, 5, 200, seed=0, chunk_size=64)
    assert sketch.shape == (400, 6)
    true = cdist(feats.astype(np.float64), feats.astype(np.float64))
    low = cdist(sketch.astype(np.float64), sketch.astype(np.float64))
    assert np.all(low <= true * (1 + 1e-4) + 1e-4)
    assert np.median(low[true > 0] / true[true > 0]) > 0.5  # and they are not trivial
    narrow = uniform(50, 4, 0)
    assert pca_sketch(narrow, 5, 200, seed=0, chunk_size=64) is narrow


def test_radius_is_the_largest_distance_to_the_selection() -> None:
    feats = clustered(500, 8, seed=1)
    chosen = GreedyCoresetSampler(0.1, seed=0, progress=False).select(feats)
    expected = cdist(feats.astype(np.float64), feats[chosen].astype(np.float64)).min(axis=1).max()
    assert coverage_radius(feats, chosen) == pytest.approx(expected, rel=1e-4)
    # more members never make the coverage worse
    more = GreedyCoresetSampler(0.3, seed=0, progress=False).select(feats)
    assert coverage_radius(feats, more) <= coverage_radius(feats, chosen)


def test_projection_only_narrows_wide_features() -> None:
    narrow, wide = uniform(100, 16, 0), uniform(100, 64, 0)
    sampler = GreedyCoresetSampler(0.1, 4, CoresetSettings(projection_dim=32))
    assert sampler.project(narrow) is narrow  # no copy when already narrow enough
    projected = sampler.project(wide)
    assert projected.shape == (100, 32)
    np.testing.assert_array_equal(projected, sampler.project(wide))


def test_same_seed_same_coreset_other_seed_other_start() -> None:
    feats = clustered(2000, 16, seed=9)
    a = GreedyCoresetSampler(0.02, seed=7, progress=False).select(feats)
    b = GreedyCoresetSampler(0.02, seed=7, progress=False).select(feats.copy())
    c = GreedyCoresetSampler(0.02, seed=8, progress=False).select(feats)
    np.testing.assert_array_equal(a, b)
    assert a[0] != c[0]
    for chosen in (a, c):
        assert chosen.dtype == np.int64 and chosen.size == 40
        assert np.unique(chosen).size == chosen.size
        assert chosen.min() >= 0 and chosen.max() < 2000


def test_fraction_edge_cases() -> None:
    feats = uniform(57, 4, 0)
    np.testing.assert_array_equal(
        GreedyCoresetSampler(1.0, 0, progress=False).select(feats), np.arange(57)
    )
    assert GreedyCoresetSampler(1e-6, 0, progress=False).select(feats).size == 1
    assert GreedyCoresetSampler(0.5, 0, progress=False).select(feats[:1]).tolist() == [0]
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(DataError, match="fraction"):
            GreedyCoresetSampler(bad, 0)
    for empty in (np.zeros((0, 4), np.float32), np.zeros(4, np.float32)):
        with pytest.raises(DataError, match="non-empty"):
            GreedyCoresetSampler(0.5, 0).select(empty)


def test_duplicate_points_still_give_distinct_indices() -> None:
    """Once every point coincides with a member, the remaining picks must not repeat."""
    feats = np.repeat(uniform(3, 5, 1), 10, axis=0)  # 3 distinct points, 10 copies each
    chosen = GreedyCoresetSampler(0.4, 0, progress=False).select(feats)
    assert chosen.size == 12 and np.unique(chosen).size == 12
    assert coverage_radius(feats, chosen) == pytest.approx(0.0, abs=1e-3)


def test_sampler_uses_the_coreset_settings() -> None:
    cfg = CoresetSettings(projection_dim=16, chunk_size=100, max_groups=2, sketch_dim=3,
                          sketch_sample=500)
    sampler = GreedyCoresetSampler(0.25, 5, cfg, progress=False)
    assert (sampler.fraction, sampler.projection_dim, sampler.seed) == (0.25, 16, 5)
    assert (sampler.chunk_size, sampler.max_groups, sampler.sketch_dim,
            sampler.sketch_sample) == (100, 2, 3, 500)
    assert sampler.select(uniform(40, 8, 0)).size == 10


def test_small_chunks_give_the_same_coreset() -> None:
    feats = clustered(1500, 12, seed=3)
    big = GreedyCoresetSampler(0.04, seed=1, progress=False).select(feats)
    small = GreedyCoresetSampler(0.04, 1, CoresetSettings(chunk_size=64),
                                 progress=False).select(feats)
    np.testing.assert_array_equal(big, small)


def test_min_keep_is_a_floor_that_keeps_small_sets_whole() -> None:
    feats = clustered(400, 8, seed=2)
    floor = GreedyCoresetSampler(0.1, seed=0, min_keep=100, progress=False)
    assert floor.n_select(400) == 100 and floor.n_select(5000) == 500 and floor.n_select(60) == 60
    chosen = floor.select(feats)
    assert len(chosen) == 100
    # the floor extends the same farthest-point traversal: the 10 % coreset is its prefix
    plain = GreedyCoresetSampler(0.1, seed=0, progress=False).select(feats)
    np.testing.assert_array_equal(chosen[:len(plain)], plain)
    whole = GreedyCoresetSampler(0.1, seed=0, min_keep=1000, progress=False).select(feats)
    np.testing.assert_array_equal(whole, np.arange(400))
