"""Procedural synthetic defects: exact masks, realistic blending, determinism, data sets."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import binary_erosion, gaussian_filter

from exdd.config import DataConfig, DemoConfig, ProceduralConfig, SynthConfig
from exdd.data.readers import load_samples
from exdd.data.demo import make_demo
from exdd.errors import DataError
from exdd.data.synth import PROVENANCE_FILE, read_provenance, regenerate, synthesize
from exdd.data.synth.procedural import render_defects

KINDS = ["scratch", "spot", "blotch", "pit"]


def _textured(seed: int, size: int = 96, level: float = 0.5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    tex = gaussian_filter(rng.standard_normal((size, size)), 0.8)
    return np.clip(level + 0.04 * tex / tex.std(), 0, 1).astype(np.float32)[..., None]


def _high_pass(x: np.ndarray) -> np.ndarray:
    return x - gaussian_filter(x, 1.5)


@pytest.mark.parametrize("kind", KINDS)
def test_mask_is_exactly_the_changed_pixels(kind: str) -> None:
    bg = _textured(1)
    cfg = ProceduralConfig(kinds=[kind])
    for seed in range(3):
        out, mask, kinds = render_defects(bg, np.random.default_rng(seed), cfg)
        change = np.abs(out - bg).max(axis=2)
        assert set(kinds) == {kind} and mask.any()
        assert (change[mask] > cfg.mask_delta).all()
        assert (change[~mask] <= cfg.mask_delta).all()
        assert out.min() >= 0.0 and out.max() <= 1.0


@pytest.mark.parametrize("kind", KINDS)
def test_soft_edges_not_pasted_rectangles(kind: str) -> None:
    bg = _textured(2)
    cfg = ProceduralConfig(kinds=[kind], defects_per_image=(1, 1))
    out, mask, _ = render_defects(bg, np.random.default_rng(0), cfg)
    ys, xs = np.nonzero(mask)
    box = (np.ptp(ys) + 1) * (np.ptp(xs) + 1)
    assert mask.sum() < 0.95 * box  # not a filled rectangle
    change = np.abs(out - bg).max(axis=2)[mask]
    assert (change < 0.5 * change.max()).any()  # a soft, anti-aliased rim


@pytest.mark.parametrize("kind", ["spot", "blotch"])
def test_defect_keeps_the_surface_texture(kind: str) -> None:
    bg = _textured(3, size=128)
    cfg = ProceduralConfig(kinds=[kind], defects_per_image=(1, 1), spot_radius=(0.1, 0.12))
    out, mask, _ = render_defects(bg, np.random.default_rng(4), cfg)
    inner = binary_erosion(mask, iterations=3)
    assert inner.sum() > 20
    corr = np.corrcoef(_high_pass(out[..., 0])[inner], _high_pass(bg[..., 0])[inner])[0, 1]
    assert corr > 0.8


def test_darkening_follows_the_local_lighting() -> None:
    """The same pit removes twice as much light from a surface twice as bright."""
    cfg = ProceduralConfig(kinds=["pit"], defects_per_image=(1, 1), texture_keep=1.0)
    changes = []
    for level in (0.3, 0.6):
        bg = np.full((64, 64, 1), level, np.float32)
        out, mask, _ = render_defects(bg, np.random.default_rng(7), cfg)
        changes.append((bg - out)[..., 0][mask].max())
    assert changes[1] / changes[0] == pytest.approx(2.0, rel=0.05)


def test_same_seed_same_pixels_other_seed_differs() -> None:
    bg = _textured(5)
    cfg = ProceduralConfig()
    a = render_defects(bg, np.random.default_rng(11), cfg)
    b = render_defects(bg, np.random.default_rng(11), cfg)
    c = render_defects(bg, np.random.default_rng(12), cfg)
    assert (a[0] == b[0]).all() and (a[1] == b[1]).all() and a[2] == b[2]
    assert not (a[1] == c[1]).all()


@pytest.fixture(scope="module")
def demo(small_demo: Path) -> Path:
    return small_demo  # conftest.py: one demo data set for the session


def test_synthesize_writes_a_traceable_regenerable_set(demo: Path, tmp_path: Path) -> None:
    out = synthesize(demo, tmp_path / "syn", SynthConfig(), DataConfig(), count=6, seed=3)
    samples = load_samples(out)
    assert len(samples) == 6
    assert all(s.label == 1 and s.split == "train" and s.mask is not None for s in samples)
    records = read_provenance(out)
    normals = {str(s.image.resolve()) for s in load_samples(demo, "train") if s.label == 0}
    assert [r.image for r in records] == [f"train/{i:05d}.png" for i in range(6)]
    for r in records:
        assert r.backend == "procedural" and r.model_id is None and r.prompt is None
        assert r.source_image in normals and set(r.detail["kinds"]) <= set(KINDS)
        assert Image.open(out / r.image).size == Image.open(r.source_image).size
    img, mask = regenerate(records[4])
    assert np.array_equal(np.asarray(img), np.asarray(Image.open(out / records[4].image)))
    assert np.array_equal(np.asarray(mask), np.asarray(Image.open(out / records[4].mask)))

    again = synthesize(demo, tmp_path / "again", SynthConfig(), DataConfig(), count=6, seed=3)
    other = synthesize(demo, tmp_path / "other", SynthConfig(), DataConfig(), count=6, seed=4)
    for name in ("train/00002.png", PROVENANCE_FILE):
        assert (out / name).read_bytes() == (again / name).read_bytes()
    assert (out / "train/00002.png").read_bytes() != (other / "train/00002.png").read_bytes()


def test_rgb_sources_stay_rgb(tmp_path: Path) -> None:
    train = tmp_path / "rgb" / "train"
    train.mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((40, 56, 3)) * 80 + 90).astype(np.uint8)).save(train / "00000.png")
    Image.fromarray(np.zeros((40, 56), np.uint8)).save(train / "00000_GT.png")
    out = synthesize(tmp_path / "rgb", tmp_path / "syn", SynthConfig(), DataConfig(), count=2)
    img = Image.open(out / "train/00000.png")
    assert img.mode == "RGB" and img.size == (56, 40)


def test_regenerate_refuses_a_changed_source(demo: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    make_demo(copy, DemoConfig(height=32, width=32, train_normal=1, train_defect=0, test_normal=1,
                               test_defect=1))
    out = synthesize(copy, tmp_path / "syn", SynthConfig(), DataConfig(), count=1)
    record = read_provenance(out)[0]
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(record.source_image)
    with pytest.raises(DataError, match="source changed"):
        regenerate(record)


def test_bad_input_is_a_clear_error_and_nothing_is_written(demo: Path, tmp_path: Path) -> None:
    only_defects = make_demo(tmp_path / "defects", DemoConfig(height=32, width=32, train_normal=1,
                                                              train_defect=2, test_normal=1, test_defect=1))
    for s in load_samples(only_defects, "train"):
        if s.label == 0:
            os.remove(s.image)
            os.remove(s.mask)
    with pytest.raises(DataError, match="no defect-free training images"):
        synthesize(only_defects, tmp_path / "syn", SynthConfig(), DataConfig(), count=2)
    assert not (tmp_path / "syn").exists()

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(DataError, match="not writable"):
        synthesize(demo, blocker / "syn", SynthConfig(), DataConfig(), count=2)
    with pytest.raises(DataError, match="not a folder"):
        synthesize(demo, blocker, SynthConfig(), DataConfig(), count=2)

    previous = synthesize(demo, tmp_path / "keep", SynthConfig(), DataConfig(), count=2)
    before = (previous / PROVENANCE_FILE).read_bytes()
    broken = tmp_path / "broken" / "train"
    broken.mkdir(parents=True)
    (broken / "00000.png").write_bytes(b"not an image")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(broken / "00000_GT.png")
    with pytest.raises(DataError, match="unreadable image"):
        synthesize(tmp_path / "broken", previous, SynthConfig(), DataConfig(), count=2)
    assert (previous / PROVENANCE_FILE).read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if ".staging-" in p.name) == []
