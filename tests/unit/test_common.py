"""The faiss nearest-neighbour wrapper agrees with brute force and fails clearly."""

from __future__ import annotations

import numpy as np
import pytest

from exdd.detector.index import NearestNeighbourIndex, gpu_available
from exdd.detector.settings import SearchSettings
from exdd.errors import ModelError

CPU = SearchSettings(use_gpu=False)


def brute_force(bank: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    dist = np.linalg.norm(queries[:, None, :].astype(np.float64) - bank[None], axis=2)
    order = np.argsort(dist, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(dist, order, axis=1), order


@pytest.mark.parametrize("k", [1, 4])
def test_search_equals_brute_force_across_batches(k: int) -> None:
    rng = np.random.default_rng(3)
    bank = rng.standard_normal((300, 24)).astype(np.float32)
    queries = rng.standard_normal((53, 24)).astype(np.float32)
    batched = SearchSettings(use_gpu=False, batch_size=7)
    index = NearestNeighbourIndex(batched).fit(bank)  # 8 batches
    dist, idx = index.search(queries, k)
    ref_dist, ref_idx = brute_force(bank, queries, k)
    assert dist.shape == idx.shape == (53, k)
    assert dist.dtype == np.float32 and idx.dtype == np.int64
    np.testing.assert_allclose(dist, ref_dist, rtol=1e-4, atol=1e-4)  # euclidean, not squared
    np.testing.assert_array_equal(idx, ref_idx)


def test_bank_rows_find_themselves_at_distance_zero() -> None:
    bank = np.random.default_rng(0).uniform(0, 5, (40, 8)).astype(np.float32)
    dist, idx = NearestNeighbourIndex(CPU).fit(bank).search(bank, 1)
    np.testing.assert_array_equal(idx[:, 0], np.arange(40))
    assert np.all(dist >= 0.0) and dist.max() < 1e-3


def test_fit_copies_the_bank_and_reset_forgets_it() -> None:
    bank = np.eye(3, dtype=np.float32)
    index = NearestNeighbourIndex(CPU).fit(bank)
    bank[:] = 100.0
    dist, idx = index.search(np.array([[1.0, 0.0, 0.0]], np.float32), 1)
    assert idx[0, 0] == 0 and dist[0, 0] == pytest.approx(0.0, abs=1e-6)
    assert index.ntotal == 3
    index.reset()
    assert index.ntotal == 0
    with pytest.raises(ModelError, match="not fitted"):
        index.search(np.zeros((1, 3), np.float32), 1)


@pytest.mark.parametrize(
    ("bank", "needle"),
    [
        (np.zeros((0, 16), np.float32), "empty"),
        (np.zeros(16, np.float32), "2-D"),
        (np.array([[0.0, np.nan]], np.float32), "NaN"),
    ],
)
def test_bad_banks_raise_model_error(bank: np.ndarray, needle: str) -> None:
    with pytest.raises(ModelError, match=needle):
        NearestNeighbourIndex(CPU).fit(bank)


def test_bad_queries_raise_model_error() -> None:
    index = NearestNeighbourIndex(CPU).fit(np.ones((5, 4), np.float32))
    with pytest.raises(ModelError, match="shape"):
        index.search(np.ones((2, 3), np.float32), 1)
    with pytest.raises(ModelError, match="k=6"):
        index.search(np.ones((2, 4), np.float32), 6)
    with pytest.raises(ModelError, match="k=0"):
        index.search(np.ones((2, 4), np.float32), 0)


def test_gpu_is_used_only_when_asked_and_available() -> None:
    bank = np.random.default_rng(1).standard_normal((64, 8)).astype(np.float32)
    assert not NearestNeighbourIndex(CPU).fit(bank).on_gpu
    off = NearestNeighbourIndex(SearchSettings(use_gpu=False, batch_size=3))
    assert not off.fit(bank).on_gpu and off.batch_size == 3
    index = NearestNeighbourIndex(SearchSettings(use_gpu=True)).fit(bank)
    assert index.on_gpu == gpu_available()
    dist, idx = index.search(bank[:5], 2)
    ref_dist, ref_idx = brute_force(bank, bank[:5], 2)
    np.testing.assert_allclose(dist, ref_dist, rtol=1e-3, atol=1e-3)
    np.testing.assert_array_equal(idx, ref_idx)


def test_hnsw_index_is_deterministic_and_close_to_exact() -> None:
    """The approximate option: same bank -> same answers; nearly always the true neighbour."""
    rng = np.random.default_rng(7)
    centres = rng.normal(size=(20, 32)).astype(np.float32) * 5
    bank = (centres[rng.integers(20, size=4000)] + rng.normal(size=(4000, 32))).astype(np.float32)
    queries = (centres[rng.integers(20, size=500)] + rng.normal(size=(500, 32))).astype(np.float32)
    exact = NearestNeighbourIndex(CPU).fit(bank).search(queries, 1)[0]
    graph = SearchSettings(use_gpu=False, index="hnsw")
    first = NearestNeighbourIndex(graph).fit(bank).search(queries, 1)
    second = NearestNeighbourIndex(graph).fit(bank).search(queries, 1)
    assert first[0].tobytes() == second[0].tobytes()
    assert (first[1] == second[1]).all()
    assert (first[0] >= exact - 1e-4).all()  # never closer than the true nearest
    assert np.mean(np.isclose(first[0], exact, rtol=1e-5)) > 0.9
