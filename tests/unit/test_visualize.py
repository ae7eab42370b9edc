"""Overlays and plots: real PNG files that decode, have the right size and show something."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from exdd.errors import DataError
from exdd.evaluation.metrics import image_metrics
from exdd.inference.overlays import overlay, overlay_grid, plot_roc_pr, save_overlay


def _image(h: int = 40, w: int = 24) -> np.ndarray:
    return np.full((h, w, 3), 0.5, dtype=np.float32)


def _hot_map(h: int = 40, w: int = 24) -> np.ndarray:
    amap = np.zeros((h, w), np.float32)
    amap[:10] = 1.0  # top band hot, rest cold
    return amap


def _decoded(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        assert img.format == "PNG"
        return np.asarray(img.convert("RGB"))


def test_overlay_colours_follow_the_shared_scale() -> None:
    out = overlay(_image(), _hot_map(), vmin=0.0, vmax=1.0)
    assert out.shape == (40, 24, 3) and out.dtype == np.uint8
    hot, cold = out[0, 0].astype(int), out[-1, 0].astype(int)
    assert hot[0] > hot[2] and cold[2] > cold[0]  # jet: high is red, low is blue
    # The same map under a wider range looks cooler: normalisation is the caller's.
    wide = overlay(_image(), _hot_map(), vmin=0.0, vmax=4.0)
    assert wide[0, 0, 0] < out[0, 0, 0]


def test_overlay_resizes_a_smaller_map_and_rejects_bad_shapes() -> None:
    out = overlay(_image(80, 48), _hot_map(40, 24), 0.0, 1.0)
    assert out.shape == (80, 48, 3)
    assert out[0, 0, 0] > out[-1, 0, 0]
    with pytest.raises(DataError, match="RGB"):
        overlay(np.zeros((4, 4)), np.zeros((4, 4)), 0.0, 1.0)


def test_save_overlay_writes_a_decodable_png(tmp_path: Path) -> None:
    path = save_overlay(tmp_path / "sub" / "a.png", _image(), _hot_map(), 0.0, 1.0)
    pixels = _decoded(path)
    assert pixels.shape == (40, 24, 3)
    assert np.array_equal(pixels, overlay(_image(), _hot_map(), 0.0, 1.0))
    assert [p.name for p in path.parent.iterdir()] == ["a.png"]  # no temp file left


def test_overlay_grid_png(tmp_path: Path) -> None:
    maps = [_hot_map() * k for k in (0.5, 1.0, 2.0)]
    path = overlay_grid([_image()] * 3, maps, ["a", "b", "c"], tmp_path / "grid.png")
    pixels = _decoded(path)
    assert pixels.shape[0] > 40 and pixels.shape[1] > 3 * 24
    assert pixels.std() > 10  # not blank
    with pytest.raises(DataError, match="as many"):
        overlay_grid([_image()], maps, ["a"], tmp_path / "bad.png")


def test_plot_roc_pr_png(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    labels = np.array([0] * 20 + [1] * 20)
    metrics = image_metrics(rng.normal(size=40) + 2 * labels, labels)
    path = plot_roc_pr(metrics, tmp_path / "roc_pr.png")
    pixels = _decoded(path)
    assert pixels.shape[1] > pixels.shape[0] > 100  # two panels side by side
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 10  # curves, text, legend
    with pytest.raises(DataError, match="roc"):
        plot_roc_pr({"image_auroc": 1.0}, tmp_path / "x.png")
