"""Streaming memory-bank construction: bounded memory however many images are fitted.

Patch features arrive batch by batch into a preallocated buffer of ``chunk_patches`` rows.
Each full buffer is reduced to its greedy coreset (the configured fraction), so the final
bank is the union of per-chunk coresets and peak memory is one buffer plus the bank. With
fewer patches than one buffer (the usual case) this is exactly one global greedy coreset.
A sample of the patches each coreset left out is kept to measure tau, the bank's typical
nearest-neighbour distance for its own kind of patch, which the calibrated scoring uses;
a bank that kept every patch (``min_keep``: small defect banks are kept whole) measures it
as each patch's distance to its nearest other bank patch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import binary_dilation

from exdd.detector.index import NearestNeighbourIndex
from exdd.detector.sampler import GreedyCoresetSampler
from exdd.detector.settings import BankSettings, CoresetSettings, SearchSettings
from exdd.errors import DataError


def defect_cells(masks: np.ndarray, grid: tuple[int, int], dilation: int) -> np.ndarray:
    """Grid cells (n, h, w) under each boolean mask (n, H, W), dilated by ``dilation`` pixels
    first: the patches of a defect image that go into M_P."""
    if dilation:
        masks = np.stack([binary_dilation(m, iterations=dilation) for m in masks])
    cover = F.adaptive_max_pool2d(torch.from_numpy(masks.astype(np.float32))[:, None], grid)
    return cover[:, 0].numpy() > 0


@dataclass
class BankBuilder:
    """Accumulates (n, ``dim``) patch features; ``finish`` returns (bank, tau).

    ``fraction`` and ``min_keep`` size the coreset, ``search`` the index that measures tau.
    Patches may come with an owner each (the index of their image): ``owners`` then says
    whose every bank member is, so a bank without some images' members can be cut from it.
    """

    fraction: float
    dim: int
    seed: int
    banks: BankSettings
    coreset: CoresetSettings
    search: SearchSettings
    min_keep: int = 1
    timings: dict[str, float] = field(default_factory=lambda: {"coreset": 0.0, "indexing": 0.0})

    def __post_init__(self) -> None:
        self.chunk_patches = self.banks.stream_chunk_patches
        self.calibration_patches = self.banks.calibration_patches
        self._buffer = np.empty((0, self.dim), np.float32)
        self._owner_buffer = np.empty(0, np.int64)
        self._filled = 0
        self._selected: list[np.ndarray] = []
        self._selected_owners: list[np.ndarray] = []
        self._probes: list[np.ndarray] = []
        self._rng = np.random.default_rng(self.seed)
        self.seen = 0

    def add(self, feats: np.ndarray, owners: np.ndarray | None = None) -> None:
        """Append (n, dim) features (with ``owners``: (n,) image indices), reducing the
        buffer whenever it fills up."""
        feats = feats.reshape(-1, self.dim)
        owners = np.full(len(feats), -1, np.int64) if owners is None else owners
        while len(feats):
            if len(self._buffer) == 0:
                self._buffer = np.empty((self.chunk_patches, self.dim), np.float32)
                self._owner_buffer = np.empty(self.chunk_patches, np.int64)
            room = self.chunk_patches - self._filled
            take = feats[:room]
            self._buffer[self._filled:self._filled + len(take)] = take
            self._owner_buffer[self._filled:self._filled + len(take)] = owners[:room]
            self._filled += len(take)
            self.seen += len(take)
            feats, owners = feats[room:], owners[room:]
            if self._filled == self.chunk_patches:
                self._reduce()

    def _reduce(self) -> None:
        chunk = self._buffer[: self._filled]
        start = time.perf_counter()
        chosen = GreedyCoresetSampler(self.fraction, self.seed, self.coreset,
                                      min_keep=self.min_keep).select(chunk)
        self.timings["coreset"] += time.perf_counter() - start
        self._selected.append(chunk[chosen].copy())
        self._selected_owners.append(self._owner_buffer[chosen].copy())
        left_out = np.setdiff1d(np.arange(len(chunk)), chosen)
        if len(left_out):
            keep = self._rng.choice(left_out, min(len(left_out), self.calibration_patches),
                                    replace=False)
            self._probes.append(chunk[np.sort(keep)].copy())
        self._filled = 0

    @property
    def owners(self) -> np.ndarray:
        """Per bank member (in ``finish``'s order), the owner its patch was added with."""
        return np.concatenate(self._selected_owners) if self._selected_owners else np.empty(0)

    def finish(self) -> tuple[np.ndarray, float]:
        if self._filled:
            self._reduce()
        self._buffer = np.empty((0, self.dim), np.float32)
        if not self._selected:
            raise DataError("no patches to build a memory bank from")
        bank = np.ascontiguousarray(np.concatenate(self._selected))
        if len(bank) < 2 and not self._probes:
            return bank, 1.0
        start = time.perf_counter()
        index = NearestNeighbourIndex(self.search)
        index.fit(bank)
        if self._probes:
            probes = np.concatenate(self._probes)
            if len(probes) > self.calibration_patches:
                probes = probes[np.sort(self._rng.choice(len(probes), self.calibration_patches,
                                                         replace=False))]
            dist = index.search(probes, 1)[0][:, 0]
        else:  # every patch was kept: each one's distance to its nearest other bank patch
            dist = index.search(bank, 2)[0][:, 1]
        self.timings["indexing"] += time.perf_counter() - start
        return bank, float(np.quantile(dist, self.banks.tau_quantile))
