"""Labelled data sets as real lines deliver them: demo surfaces at many image sizes.

``varied_manifest`` writes a manifest data set whose images (and masks) are demo images
resized to distinct sizes, so that intake meets what real lines send (magnetic-tile has
1,225 sizes among 1,344 images); ``platform_params`` is a platform params file with the
tiny MLOps settings and no lines yet, for ``exdd line add``.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
from mlops_helpers import write_params
from PIL import Image

from exdd.config import DemoConfig
from exdd.data.readers import load_samples
from exdd.data.demo import make_demo
from exdd.line.workspace import Workspace, line_params_text

DEMO = DemoConfig(height=64, width=64, train_normal=20, train_defect=10, test_normal=8,
                  test_defect=8)


def distinct_sizes(n: int, seed: int = 0, base: tuple[int, int] = (64, 64),
                   spread: float = 0.3) -> list[tuple[int, int]]:
    """``n`` different (width, height) pairs within +-``spread`` of ``base``."""
    rng = np.random.default_rng(seed)
    sizes: list[tuple[int, int]] = []
    while len(sizes) < n:
        w, h = (int(round(b * rng.uniform(1 - spread, 1 + spread))) for b in base)
        if (w, h) not in sizes:
            sizes.append((w, h))
    return sizes


def varied_manifest(root: Path, seed: int = 0, base: tuple[int, int] = (64, 64)
                    ) -> tuple[Path, list[tuple[int, int]]]:
    """A manifest data set (train 30, test 16 demo images), every image at its own size
    around ``base``; returns the manifest and the sizes."""
    demo = make_demo(root / "demo", DEMO, seed)
    samples = load_samples(demo)
    sizes = distinct_sizes(len(samples), seed, base)
    rows = []
    for i, (s, size) in enumerate(zip(samples, sizes)):
        image = Path("images") / f"{s.split}_{i:03d}.png"
        (root / image).parent.mkdir(parents=True, exist_ok=True)
        Image.open(s.image).resize(size, Image.BILINEAR).save(root / image)
        mask = ""
        if s.label:
            mask = f"masks/{s.split}_{i:03d}.png"
            (root / mask).parent.mkdir(parents=True, exist_ok=True)
            Image.open(s.mask).resize(size, Image.NEAREST).save(root / mask)
        rows.append({"image": image.as_posix(), "mask": mask,
                     "label": "defect" if s.label else "normal", "split": s.split})
    manifest = root / "manifest.csv"
    with open(manifest, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return manifest, sizes


def platform_params(path: Path, extra: dict[str, Any] | None = None) -> Path:
    """The repository's params with the tiny settings (and ``extra``), no lines listed."""
    write_params(path, extra)
    path.write_text(line_params_text(path.read_text()))
    return path


def uncommitted(workspace: Path) -> list[str]:
    """``git status --porcelain`` of the workspace: what a night left uncommitted."""
    return Workspace(workspace).git("status", "--porcelain").splitlines()
