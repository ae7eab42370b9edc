"""Exact nearest-neighbour search over a memory bank (faiss), as PatchCore's ``FaissNN``.

Scoring asks "how far is this patch from the closest bank patch" millions of times; faiss'
flat L2 index answers that exactly with BLAS, on the GPU when faiss was built with GPU
support and a device is visible. Distances come back euclidean (faiss returns squared).

``search.index: hnsw`` trades exactness for speed on CPU (a graph index, PatchCore's
"approximate" option): on two CPU cores exact search of a paper-sized bank costs more than
the backbone forward, the graph about a third of that (docs/benchmarks.md). It is built
single-threaded so that the same bank always gives the same graph, and therefore the same
scores, which rollback's byte-identical check needs.
"""

from __future__ import annotations

import faiss
import numpy as np

from exdd.detector.settings import SearchSettings
from exdd.errors import ModelError


def gpu_available() -> bool:
    """True when this faiss build has GPU support and sees at least one CUDA device."""
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


class NearestNeighbourIndex:
    """Exact L2 index: ``fit(bank)``, then ``search(queries, k)`` in batches."""

    def __init__(self, settings: SearchSettings | None = None) -> None:
        settings = settings or SearchSettings()
        self.use_gpu = settings.use_gpu
        self.batch_size = settings.batch_size
        self.kind = settings.index
        self.hnsw_m = settings.hnsw_m
        self.hnsw_ef = settings.hnsw_ef
        self._index: faiss.Index | None = None
        self._gpu_resources: object | None = None

    @property
    def on_gpu(self) -> bool:
        return self._gpu_resources is not None

    @property
    def ntotal(self) -> int:
        return 0 if self._index is None else int(self._index.ntotal)

    def fit(self, bank: np.ndarray) -> NearestNeighbourIndex:
        """Index the bank (M, D); it is copied, so later changes to ``bank`` do not leak in."""
        bank = np.asarray(bank)
        if bank.ndim != 2:
            raise ModelError(f"memory bank must be 2-D (patches, dim), got shape {bank.shape}")
        if bank.shape[0] == 0:
            raise ModelError("memory bank is empty: no patches to search (was the coreset empty?)")
        if bank.shape[1] == 0:
            raise ModelError("memory bank has zero-dimensional patches")
        bank = np.ascontiguousarray(bank, dtype=np.float32)
        if not np.isfinite(bank).all():
            raise ModelError("memory bank holds NaN or infinite values")
        self.reset()
        if self.kind == "hnsw":
            self._index = self._hnsw(bank)
            return self
        index: faiss.Index = faiss.IndexFlatL2(bank.shape[1])
        if self.use_gpu and gpu_available():
            self._gpu_resources = faiss.StandardGpuResources()
            index = faiss.index_cpu_to_gpu(self._gpu_resources, 0, index)
        index.add(bank)
        self._index = index
        return self

    def _hnsw(self, bank: np.ndarray) -> faiss.Index:
        index = faiss.IndexHNSWFlat(bank.shape[1], self.hnsw_m)
        index.hnsw.efSearch = self.hnsw_ef
        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)  # a deterministic graph
        try:
            index.add(bank)
        finally:
            faiss.omp_set_num_threads(threads)
        return index

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Distances (Q, k) float32, euclidean and ascending, and bank indices (Q, k) int64."""
        if self._index is None:
            raise ModelError("nearest-neighbour index is not fitted: call fit(bank) first")
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != self._index.d:
            raise ModelError(
                f"queries must have shape (Q, {self._index.d}) like the bank, got {queries.shape}"
            )
        if not 1 <= k <= self.ntotal:
            raise ModelError(f"k={k} neighbours asked of a bank of {self.ntotal} patches")
        n = queries.shape[0]
        distances = np.empty((n, k), np.float32)
        indices = np.empty((n, k), np.int64)
        for start in range(0, n, self.batch_size):
            stop = min(start + self.batch_size, n)
            sq, idx = self._index.search(queries[start:stop], k)
            np.sqrt(np.maximum(sq, 0.0, out=sq), out=distances[start:stop])
            indices[start:stop] = idx
        return distances, indices

    def reset(self) -> None:
        """Drop the indexed bank (and the GPU copy, if any)."""
        if self._index is not None:
            self._index.reset()
        self._index = None
        self._gpu_resources = None
