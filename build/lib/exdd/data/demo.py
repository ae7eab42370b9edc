"""The embedded demo data set: brushed metal surfaces with scratches, spots, blotches, pits.

It lets every command, test and DAG run without downloading anything. Surfaces are brushed
(streaks blurred along x), grainy, lit by a slow illumination gradient and carry sensor
noise; defects come from the procedural synthetic-defect renderer, so the demo and the
offline synthetic backend share one drawing code and its settings
(``synth.procedural``). Same seed, byte-identical files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter

from exdd.config import DemoConfig, ProceduralConfig
from exdd.fsutil import atomic_dir
from exdd.data.synth.images import mask_image, to_image
from exdd.data.synth.procedural import render_defects


def surface(rng: np.random.Generator, cfg: DemoConfig) -> np.ndarray:
    """One defect-free surface without sensor noise, (H, W, 1) float32 in [0, 1]."""
    h, w = cfg.height, cfg.width
    base = rng.uniform(*cfg.base_level)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * (xx / w - 0.5) + np.sin(angle) * (yy / h - 0.5))
    bow = ((xx / w - rng.uniform(0.2, 0.8)) ** 2 + (yy / h - rng.uniform(0.2, 0.8)) ** 2)
    lighting = base + cfg.gradient * (ramp + 0.5 * bow)
    streaks = gaussian_filter(rng.standard_normal((h, w)), (0.6, cfg.brush_length))
    streaks /= streaks.std() + 1e-9
    grain = gaussian_filter(rng.standard_normal((h, w)), 0.7)
    grain /= grain.std() + 1e-9
    img = lighting * (1 + cfg.brush * streaks) + cfg.grain * grain
    return np.clip(img, 0.0, 1.0).astype(np.float32)[..., None]


def _write(folder: Path, index: int, img: np.ndarray, mask: np.ndarray) -> None:
    to_image(img).save(folder / f"{index:05d}.png")
    mask_image(mask).save(folder / f"{index:05d}_GT.png")


def make_demo(out: Path, cfg: DemoConfig, seed: int | None = None,
              defects: ProceduralConfig | None = None) -> Path:
    """Write the demo set (KSDD2 layout: train/ and test/ with NNNNN.png + NNNNN_GT.png).

    ``seed`` overrides ``cfg.seed``; ``defects`` are the renderer's settings (params'
    ``synth.procedural``; default: its defaults). Defect-free images have an all-zero mask.
    The folder appears whole or not at all.
    """
    defects = defects or ProceduralConfig()
    rng = np.random.default_rng(cfg.seed if seed is None else seed)
    counts = {"train": (cfg.train_normal, cfg.train_defect),
              "test": (cfg.test_normal, cfg.test_defect)}
    out = Path(out)
    with atomic_dir(out) as stage:
        for split, (n_normal, n_defect) in counts.items():
            folder = stage / split
            folder.mkdir()
            # Interleave normal and defective images so file order carries no label.
            labels = rng.permutation(np.r_[np.zeros(n_normal, int), np.ones(n_defect, int)])
            for index, label in enumerate(labels):
                img = surface(rng, cfg)
                mask = np.zeros(img.shape[:2], dtype=bool)
                if label:  # the renderer redraws invisible defects: the mask is never empty
                    img, mask, _ = render_defects(img, rng, defects)
                img = img + cfg.noise * rng.standard_normal(img.shape).astype(np.float32)
                _write(folder, index, img, mask)
    return out
