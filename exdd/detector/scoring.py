"""Turning patch distances to the two memory banks into anomaly maps and image scores.

The rules, chosen by ``model.scoring.rule`` (``normal`` is d_N alone, PatchCore's map):

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
    decide an image.

``weighted``
    The pixel map is d_N * (d_N / (d_N + d_P)) ** ``defect_weight``: the distance to the
    normal bank, weighted by how much nearer the patch lies to the defect bank than to the
    normal one. It never exceeds d_N, so a normal patch that sits by chance near one defect
    exemplar cannot become an outlier.

``boosted``
    The pixel map is d_N * max(1, 2 d_N / (d_N + d_P)) ** ``boost_weight``: the normal
    bank's distance, raised (by up to 2 ** ``boost_weight``) where a patch lies nearer the
    defect bank than the normal one, and never lowered. A defect unlike every exemplar in M_P
    (a new kind, or a line whose M_P holds synthetic defects only) scores as PatchCore scores
    it, so the defect bank can add evidence but not hide an anomaly.

The default, ``auto``, picks among these at fit on held-out training images
(exdd.detector.selection), and may pool the image score from another rule's map
(``image_rule``). For the dual rules other than ``reference`` the image score is read off
the smoothed map by ``image_score`` (``top_k`` mean or ``max``; ``auto``: the max where the
map is d_N alone, as PatchCore scores an image, the top-k mean of a dual rule's map). With
``single_bank`` (PatchCore) the map is d_N, pooled the same way, or PatchCore's reweighted
s_N with ``image_score: reweighted``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter1d

from exdd.detector.index import NearestNeighbourIndex
from exdd.detector.settings import ScoringSettings


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


def _axis_operator(cells: int, pixels: int, sigma: float) -> np.ndarray:
    """(pixels, cells) matrix: 1-D linear upsampling (torch's bilinear, align_corners=False)
    followed by Gaussian smoothing (scipy's, reflect mode), applied to each unit vector."""
    eye = torch.eye(cells)[:, None, :, None]  # `cells` maps of shape (cells, 1)
    up = F.interpolate(eye, size=(pixels, 1), mode="bilinear", align_corners=False)
    op = up[:, 0, :, 0].T.double().numpy()
    if sigma > 0:
        op = gaussian_filter1d(op, sigma, axis=0, mode="reflect")
    return op.astype(np.float32)


class MapUpsampler:
    """Patch-grid maps (n, h, w) -> smoothed maps (n, H, W) at the input size.

    Bilinear upsampling and Gaussian smoothing are both linear and separable, so together
    they are one (H, h) matrix on the rows and one (W, w) on the columns: two small matrix
    products per batch instead of an image-sized upsample and a 2-D filter per image. The
    result equals upsampling then smoothing (``scipy.ndimage.gaussian_filter``) to float
    rounding.
    """

    def __init__(self, grid: tuple[int, int], out_size: tuple[int, int], sigma: float) -> None:
        self.out_size = out_size
        self.rows = torch.from_numpy(_axis_operator(grid[0], out_size[0], sigma))
        self.cols_t = torch.from_numpy(_axis_operator(grid[1], out_size[1], sigma).T.copy())

    def __call__(self, patch_maps: np.ndarray) -> np.ndarray:
        t = torch.from_numpy(np.ascontiguousarray(patch_maps, dtype=np.float32))
        return torch.matmul(torch.matmul(self.rows, t), self.cols_t).numpy()


def top_k_mean(maps: np.ndarray, fraction: float) -> np.ndarray:
    """Per map (n, ...) -> (n,): the mean of its largest ``fraction`` of values."""
    flat = maps.reshape(len(maps), -1)
    k = max(1, int(round(fraction * flat.shape[1])))
    top = np.partition(flat, flat.shape[1] - k, axis=1)[:, flat.shape[1] - k:]
    return top.mean(axis=1, dtype=np.float64)


def bank_distances(patches: np.ndarray, normal: Bank, defect: Bank | None
                   ) -> tuple[np.ndarray, np.ndarray | None]:
    """Nearest-neighbour distances of (n, D) patches to each bank: one search per bank, so a
    whole batch of images goes through faiss in one call."""
    d_n = normal.index.search(patches, 1)[0][:, 0]
    d_p = None if defect is None else defect.index.search(patches, 1)[0][:, 0]
    return d_n, d_p


def dual_evidence(d_n: np.ndarray, d_p: np.ndarray, tau_p: float, rule: ScoringSettings
                  ) -> np.ndarray:
    """Per-patch anomaly evidence of a dual rule from the distances to both banks."""
    if rule.rule == "reference":
        return d_n / (d_p + rule.ratio_eps)
    if rule.rule == "calibrated":
        return d_n / (d_p + tau_p)
    closeness = d_n / (d_n + d_p + rule.ratio_eps)  # in [0, 1): 1/2 where equidistant
    if rule.rule == "normal":
        return d_n
    if rule.rule == "weighted":
        return d_n * closeness ** rule.defect_weight
    if rule.rule == "boosted":
        return d_n * np.maximum(1.0, 2.0 * closeness) ** rule.boost_weight
    raise ValueError(f"scoring rule {rule.rule!r} is chosen at fit (exdd.detector.selection)")


def pooled(maps: np.ndarray, rule: ScoringSettings) -> np.ndarray:
    """Image scores (n,) read off smoothed maps (n, H, W): their maximum or top-k mean."""
    if rule.pooling == "max":
        return maps.reshape(len(maps), -1).max(axis=1).astype(np.float64)
    return top_k_mean(maps, rule.top_k_fraction)


@dataclass(frozen=True)
class Scorer:
    """The banks, the map upsampler and the rule: patch features -> (scores, maps)."""

    normal: Bank
    defect: Bank | None
    upsampler: MapUpsampler
    rule: ScoringSettings

    def __call__(self, patches: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Patches (n, h, w, D) of n images -> image scores (n,) and maps (n, H, W)."""
        n, gh, gw, dim = patches.shape
        flat = np.ascontiguousarray(patches.reshape(-1, dim), dtype=np.float32)
        d_n, d_p = bank_distances(flat, self.normal, self.defect)
        per_image = flat.reshape(n, gh * gw, dim)
        rule = self.rule
        if self.defect is None or d_p is None:
            maps = self.upsampler(d_n.reshape(n, gh, gw))
            if rule.pooling == "reweighted":
                return self._reweighted(per_image, d_n.reshape(n, -1), self.normal, False), maps
            return pooled(maps, rule), maps
        maps = self.upsampler(dual_evidence(d_n, d_p, self.defect.tau, rule).reshape(n, gh, gw))
        if rule.rule == "reference":
            s_n = self._reweighted(per_image, d_n.reshape(n, -1), self.normal, False)
            s_p = self._reweighted(per_image, -d_p.reshape(n, -1), self.defect, True)
            return s_n / (s_p + rule.ratio_eps), maps
        if rule.image_rule == "same":
            return pooled(maps, rule), maps
        image_maps = self.upsampler(dual_evidence(d_n, d_p, self.defect.tau,
                                                  rule.image_settings()).reshape(n, gh, gw))
        return pooled(image_maps, rule), maps

    def _reweighted(self, per_image: np.ndarray, key: np.ndarray, bank: Bank,
                    complement: bool) -> np.ndarray:
        """Reweighted score of each image's decisive patch (the one with the largest key)."""
        decisive = np.argmax(key, axis=1)
        return np.array([
            reweighted_score(per_image[i, j], bank, self.rule.knn, complement)
            for i, j in enumerate(decisive)
        ])
