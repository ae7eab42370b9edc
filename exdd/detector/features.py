"""Locally aware patch features (PatchCore section 3.1, as ExDD uses them).

Each feature map is averaged over a p x p neighbourhood (so a patch sees its context). At
the border, ``padding="zeros"`` averages zeros beyond the map as PatchCore's reference code
and anomalib do (a border patch then differs from an inner one, so it is compared with the
border patches of the normal images); ``padding="inside"`` averages the cells inside the map
only. Which one a model uses is chosen at fit (settings.AUTO). The deeper map is
upsampled to the shallower grid, the two are concatenated and a seeded
random orthogonal projection brings them to ``projection_dim``. The projection matrix is
part of the saved model: scoring with another one would compare unrelated spaces.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from exdd.detector.backbones import Backbone


def random_projection(in_dim: int, out_dim: int, seed: int) -> np.ndarray:
    """Seeded random orthogonal projection (in_dim, out_dim), scaled to keep squared
    distances in expectation: orthonormal random directions (QR of a Gaussian matrix).

    A plain Gaussian matrix is badly conditioned when the two sizes are close (Lite0's
    152 -> 128: singular values from about 0.1 to 1.9), so it stretches some directions of
    feature space and all but drops others; nearest-neighbour distances then rank patches
    worse (single bank on magnetic-tile:norm200, image / pixel AUROC 0.857 / 0.805 against
    0.884 / 0.822 orthogonal, docs/benchmarks.md). With ``out_dim >= in_dim`` it is an
    isometry.
    """
    rng = np.random.default_rng(seed)
    gauss = rng.standard_normal((in_dim, out_dim))
    if out_dim >= in_dim:
        q, r = np.linalg.qr(gauss.T)  # (out, in), orthonormal columns
        return (q * np.sign(np.diag(r))).T.astype(np.float32)
    q, r = np.linalg.qr(gauss)  # (in, out), orthonormal columns
    return (q * np.sign(np.diag(r)) * np.sqrt(in_dim / out_dim)).astype(np.float32)


class PatchEmbedder:
    """Backbone + aggregation + projection: images (B,3,H,W) -> patches (B, h, w, D)."""

    def __init__(self, backbone: Backbone, aggregation_kernel: int, projection: np.ndarray,
                 device: torch.device, padding: str) -> None:
        self.backbone = backbone.to(device)
        self.kernel = aggregation_kernel
        if padding not in ("zeros", "inside"):
            raise ValueError(f"aggregation padding must be zeros or inside, got {padding!r}")
        self.count_padding = padding == "zeros"
        self.device = device
        self.projection_matrix = projection  # as given: what a saved model stores
        self.projection = torch.from_numpy(projection).to(device)

    @property
    def in_dim(self) -> int:
        return sum(self.backbone.channels)

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.aggregate(self.backbone(images.to(self.device)))

    @torch.inference_mode()
    def aggregate(self, maps: list[torch.Tensor]) -> torch.Tensor:
        """The backbone's two maps -> projected patch features (B, h, w, D)."""
        pad = self.kernel // 2
        maps = [F.avg_pool2d(m, self.kernel, stride=1, padding=pad,
                             count_include_pad=self.count_padding) for m in maps]
        grid = maps[0].shape[-2:]
        maps = [maps[0]] + [F.interpolate(m, size=grid, mode="bilinear", align_corners=False)
                            for m in maps[1:]]
        feats = torch.cat(maps, dim=1).permute(0, 2, 3, 1)  # B, h, w, C
        return feats @ self.projection
