"""Locally aware patch features: the border handling of the neighbourhood pooling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from exdd.detector.backbones import load_backbone
from exdd.detector.features import PatchEmbedder, random_projection


def embedder(padding: str) -> PatchEmbedder:
    backbone = load_backbone("efficientnet_lite0")
    identity = np.eye(sum(backbone.channels), dtype=np.float32)
    return PatchEmbedder(backbone, 3, identity, torch.device("cpu"), padding)


@pytest.mark.parametrize("padding", ["zeros", "inside"])
def test_pooling_padding_at_the_border(padding: str) -> None:
    """On constant maps, "inside" keeps every cell at the constant; "zeros" averages the zeros
    beyond the border (PatchCore's), so a corner keeps 4/9 of it and an edge 6/9, while
    inner cells are untouched either way."""
    emb = embedder(padding)
    shallow, deep = emb.backbone.channels
    maps = [torch.full((1, shallow, 6, 8), 9.0), torch.full((1, deep, 3, 4), 9.0)]
    feats = emb.aggregate(maps)[0, ..., :shallow].numpy()  # (h, w, shallow): no upsampling
    assert feats.shape == (6, 8, shallow)
    np.testing.assert_allclose(feats[1:-1, 1:-1], 9.0, rtol=1e-6)
    corner, edge = (9.0, 9.0) if padding == "inside" else (4.0, 6.0)
    np.testing.assert_allclose(feats[0, 0], corner, rtol=1e-6)
    np.testing.assert_allclose(feats[-1, -1], corner, rtol=1e-6)
    np.testing.assert_allclose(feats[0, 3], edge, rtol=1e-6)
    np.testing.assert_allclose(feats[2, 0], edge, rtol=1e-6)


@pytest.mark.parametrize("shape", [(152, 128), (152, 152), (64, 200)])
def test_projection_is_orthogonal_and_keeps_distances(shape: tuple[int, int]) -> None:
    """Narrowing: orthonormal columns scaled by sqrt(in/out); widening or equal: an isometry."""
    in_dim, out_dim = shape
    p = random_projection(in_dim, out_dim, seed=5).astype(np.float64)
    gram = p.T @ p if out_dim < in_dim else p @ p.T
    scale = in_dim / out_dim if out_dim < in_dim else 1.0
    np.testing.assert_allclose(gram, scale * np.eye(min(shape)), atol=1e-5)
    np.testing.assert_array_equal(p, random_projection(in_dim, out_dim, seed=5))
