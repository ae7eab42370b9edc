"""Stress variants of the shared real data sets, for the quality benchmarks.

A default tuned on one data set does not carry over, so the quality and selection
benchmarks run on every shared set and on variants that stress what real lines do
differently: few labelled defects (10 or 35 defective training images), few normal images
(200), tall and wide parts (crops at aspect 2.5 : 1), besides the shared sets' own varied sizes (magnetic-tile)
and tiny defects (mvtec3d-tire). Variants are manifests (and, for crops, new image files)
written under a cache folder outside the repository; the test images of a subsampled
variant are the original test split, untouched.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from exdd.data.readers import Sample, load_samples, mask_is_nonempty, open_image

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SOURCES = {"magnetic-tile": SHARED / "magnetic-tile" / "split.csv",
           "mvtec3d-tire": SHARED / "mvtec3d-tire"}
CROP_ASPECT = 2.5  # long side / short side of the tall and wide crops
SEED = 0


def _write_manifest(path: Path, samples: list[Sample]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "mask", "label", "split"])
        for s in samples:
            w.writerow([s.image.resolve(), s.mask.resolve() if s.mask else "", s.label, s.split])
    tmp.replace(path)
    return path


def few_train(samples: list[Sample], label: int, n: int) -> list[Sample]:
    """Keep ``n`` seeded training images of class ``label``; everything else as it is.

    Few defects (label 1) is a line that has labelled little yet; few normals (label 0) is a
    new line's first days, and a train split small enough for the peer's coreset on 2 cores.
    """
    pool = [i for i, s in enumerate(samples) if s.split == "train" and s.label == label]
    keep = set(np.random.default_rng(SEED).choice(pool, min(n, len(pool)),
                                                  replace=False).tolist())
    return [s for i, s in enumerate(samples)
            if not (s.split == "train" and s.label == label) or i in keep]


def _crop_box(size: tuple[int, int], mask: np.ndarray | None, tall: bool) -> tuple[int, ...]:
    """The largest box of the crop aspect inside the image, centred on the defect if any."""
    w, h = size
    if tall:
        cw, ch = min(w, int(h / CROP_ASPECT)), h
    else:
        cw, ch = w, min(h, int(w / CROP_ASPECT))
    if mask is not None and mask.any():
        ys, xs = np.nonzero(mask)
        cx, cy = int(xs.mean()), int(ys.mean())
    else:
        cx, cy = w // 2, h // 2
    x0 = int(np.clip(cx - cw // 2, 0, w - cw))
    y0 = int(np.clip(cy - ch // 2, 0, h - ch))
    return x0, y0, x0 + cw, y0 + ch


def cropped(samples: list[Sample], out: Path, tall: bool) -> list[Sample]:
    """Every image and mask cropped to a tall (or wide) part; labels follow the crop."""
    result = []
    for i, s in enumerate(samples):
        img = open_image(s.image)
        mask = open_image(s.mask).convert("L") if s.mask else None
        marr = None if mask is None else np.asarray(mask) > 127
        box = _crop_box(img.size, marr, tall)
        image_path = out / s.split / f"{i:05d}.png"
        mask_path = out / s.split / f"{i:05d}_GT.png"
        image_path.parent.mkdir(parents=True, exist_ok=True)
        img.crop(box).save(image_path)
        m = mask.crop(box) if mask else Image.new("L", (box[2] - box[0], box[3] - box[1]))
        m.save(mask_path)
        result.append(Sample(image_path, mask_path, int(mask_is_nonempty(mask_path)), s.split))
    return result


def build(name: str, cache: Path) -> Path:
    """The manifest of variant ``name`` (built once under ``cache``)."""
    base, _, kind = name.partition(":")
    if base not in SOURCES:
        raise SystemExit(f"unknown data set {base!r}; choose one of {sorted(SOURCES)}")
    if not SOURCES[base].exists():
        raise SystemExit(f"{SOURCES[base]}: shared data set not found")
    if not kind:
        return SOURCES[base]
    manifest = cache / base / kind / "manifest.csv"
    if manifest.exists():
        return manifest
    samples = load_samples(SOURCES[base])
    makers: dict[str, Callable[[], list[Sample]]] = {
        "def10": lambda: few_train(samples, 1, 10),
        "def35": lambda: few_train(samples, 1, 35),
        "norm200": lambda: few_train(samples, 0, 200),
        "tall": lambda: cropped(samples, manifest.parent, tall=True),
        "wide": lambda: cropped(samples, manifest.parent, tall=False),
    }
    if kind not in makers:
        raise SystemExit(f"unknown variant {kind!r}; choose one of {sorted(makers)}")
    return _write_manifest(manifest, makers[kind]())


ALL = ("magnetic-tile", "magnetic-tile:def10", "magnetic-tile:def35", "magnetic-tile:tall",
       "magnetic-tile:wide", "mvtec3d-tire", "mvtec3d-tire:def10")
