"""The embedded demo data set: deterministic, right counts, masks exactly on defects."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from scipy.ndimage import binary_dilation

from exdd.config import DemoConfig
from exdd.data.readers import load_samples
from exdd.data.demo import make_demo

SMALL = DemoConfig(height=64, width=48, train_normal=5, train_defect=3, test_normal=4, test_defect=4)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_identical_bytes_and_other_seed_differs(tmp_path: Path) -> None:
    a = _files(make_demo(tmp_path / "a", SMALL, seed=7))
    b = _files(make_demo(tmp_path / "b", SMALL, seed=7))
    c = _files(make_demo(tmp_path / "c", SMALL, seed=8))
    assert a == b
    assert a.keys() == c.keys()
    assert a != c


def test_counts_sizes_and_masks_match_labels(tmp_path: Path) -> None:
    root = make_demo(tmp_path / "demo", SMALL)
    assert sorted(p.name for p in root.iterdir()) == ["test", "train"]
    for split, (n_normal, n_defect) in {"train": (5, 3), "test": (4, 4)}.items():
        samples = load_samples(root, split)
        assert len(samples) == n_normal + n_defect
        assert sum(s.label for s in samples) == n_defect
        for s in samples:
            img = Image.open(s.image)
            mask = np.asarray(Image.open(s.mask))
            assert img.size == (SMALL.width, SMALL.height) and img.mode == "L"
            assert mask.shape == (SMALL.height, SMALL.width)
            assert set(np.unique(mask)) <= {0, 255}
            assert bool(mask.any()) == bool(s.label)


def test_defects_are_visible_but_not_saturated(tmp_path: Path) -> None:
    """Defect pixels differ from the surface right around them, yet are mostly not clipped."""
    root = make_demo(tmp_path / "demo", SMALL)
    for s in load_samples(root, "test"):
        if not s.label:
            continue
        img = np.asarray(Image.open(s.image), dtype=np.float32)
        mask = np.asarray(Image.open(s.mask)) > 0
        ring = binary_dilation(mask, iterations=3) & ~mask
        inside, around = img[mask], img[ring]
        # Defect pixels stray from the local surface level more than its own texture does.
        spread = np.abs(around - around.mean()).mean()
        assert np.abs(inside - around.mean()).mean() > 1.3 * spread
        assert (inside == 255).mean() < 0.5 and (inside == 0).mean() < 0.5


def test_default_config_matches_the_documented_shape() -> None:
    cfg = DemoConfig()
    assert (cfg.train_normal, cfg.train_defect, cfg.test_normal, cfg.test_defect) == (40, 12, 20, 20)
    assert (cfg.height, cfg.width) == (160, 96)
