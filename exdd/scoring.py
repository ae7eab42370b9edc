"""Turning patch distances to the two memory banks into anomaly maps and image scores.

Two rules, chosen by ``model.scoring``:

``reference``
    ExDD as written: per bank, PatchCore's neighbourhood reweighting of the decisive patch
    (the farthest from M_N; the closest to M_P), image score s_N / (s_P + eps), pixel map
    d_N / (d_P + eps). The ratio is unbounded where a patch is close to a defect patch by
    chance, which hurts image ranking.

``calibrated``
    Ours. The pixel map is d_N / (d_P + tau_P), where tau_P is the defect bank's typical
    nearest-neighbour distance for a defect patch (measured on training defect patches the
    coreset left out). The ratio alone explodes wherever a patch happens to sit very close
    to one defect exemplar, normal or not; adding tau_P says "closer to a defect than a
    defect usually is to its bank is no further evidence", which bounds the denominator by
    the bank's own resolution. The image score is read off the smoothed map (the mean of its
    top ``top_k_fraction``), so image and pixel decisions agree and one hot pixel does not
    decide an image. See docs/benchmarks.md for the measurement behind the default.

With ``single_bank`` (PatchCore), the map is d_N and the image score is reweighted s_N.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter

from exdd.common import NearestNeighbourIndex
from exdd.config import ModelConfig


@dataclass(frozen=True)
class Bank:
    """A memory bank: its vectors, their search index and its distance scale tau."""

    vectors: np.ndarray
    index: NearestNeighbourIndex
    tau: float


def reweighted_score(query: np.ndarray, bank: Bank, knn: int, complement: bool) -> float:
    """PatchCore eq. 7 for one decisive patch: w * s* with softmax weight over m*'s neighbours."""
    dist, idx = bank.index.search(query[None], 1)
    s_star, m_star = float(dist[0, 0]), int(idx[0, 0])
    k = min(knn, len(bank.vectors))
    _, nb = bank.index.search(bank.vectors[m_star][None], k)
    d_nb = np.linalg.norm(bank.vectors[nb[0]] - query[None], axis=1)
    scale = np.sqrt(query.shape[0])
    # Stable softmax ratio: exp(s*/sD) / sum_b exp(d_b/sD)
    logits = np.concatenate([[s_star], d_nb]) / scale
    logits -= logits.max()
    ratio = np.exp(logits[0]) / np.exp(logits[1:]).sum()
    weight = ratio if complement else 1.0 - ratio
    return weight * s_star


def upsample_and_smooth(patch_map: np.ndarray, height: int, width: int, sigma: float) -> np.ndarray:
    """Grid map (h, w) -> (height, width), bilinear, then Gaussian smoothing (sigma in pixels)."""
    t = torch.from_numpy(np.ascontiguousarray(patch_map, dtype=np.float32))[None, None]
    up = F.interpolate(t, size=(height, width), mode="bilinear", align_corners=False)[0, 0].numpy()
    return gaussian_filter(up, sigma=sigma) if sigma > 0 else up


def top_k_mean(values: np.ndarray, fraction: float) -> float:
    flat = values.ravel()
    k = max(1, int(round(fraction * flat.size)))
    return float(np.partition(flat, flat.size - k)[flat.size - k:].mean())


def bank_distances(patches: np.ndarray, normal: Bank, defect: Bank | None
                   ) -> tuple[np.ndarray, np.ndarray | None]:
    """Nearest-neighbour distances of (n, D) patches to each bank: one search per bank, so a
    whole batch of images goes through faiss in one call."""
    d_n = normal.index.search(patches, 1)[0][:, 0]
    d_p = None if defect is None else defect.index.search(patches, 1)[0][:, 0]
    return d_n, d_p


def score_image(patches: np.ndarray, d_n: np.ndarray, d_p: np.ndarray | None,
                grid: tuple[int, int], out_size: tuple[int, int], normal: Bank,
                defect: Bank | None, rule: ModelConfig) -> tuple[float, np.ndarray]:
    """One image: patches (h*w, D) and their bank distances -> (score, map at ``out_size``)."""
    if defect is None or d_p is None:
        amap = upsample_and_smooth(d_n.reshape(grid), *out_size, rule.smoothing_sigma)
        score = reweighted_score(patches[int(np.argmax(d_n))], normal, rule.knn, complement=False)
        return score, amap
    if rule.scoring == "reference":
        s_n = reweighted_score(patches[int(np.argmax(d_n))], normal, rule.knn, complement=False)
        s_p = reweighted_score(patches[int(np.argmin(d_p))], defect, rule.knn, complement=True)
        patch_map = d_n / (d_p + rule.ratio_eps)
        amap = upsample_and_smooth(patch_map.reshape(grid), *out_size, rule.smoothing_sigma)
        return s_n / (s_p + rule.ratio_eps), amap
    patch_map = d_n / (d_p + defect.tau)
    amap = upsample_and_smooth(patch_map.reshape(grid), *out_size, rule.smoothing_sigma)
    return top_k_mean(amap, rule.top_k_fraction), amap
