"""Data sets: one ``Sample`` list from either a KSDD2-layout folder or a manifest CSV.

The detector only ever sees ``Sample`` records and the two readers below, so a new
layout is a new reader, never a change to the model.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from exdd.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
SPLITS = ("train", "test")
LABELS = {"normal": 0, "defect": 1, "0": 0, "1": 1, "good": 0, "anomaly": 1}


@dataclass(frozen=True)
class Sample:
    """One image with its optional defect mask; ``label`` is 1 for defective."""

    image: Path
    mask: Path | None
    label: int
    split: str


def load_samples(path: str | Path, split: str | None = None) -> list[Sample]:
    """Read a KSDD2 folder or a manifest CSV; ``split`` filters to train or test."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: data path does not exist")
    if p.is_file():
        if p.suffix.lower() != ".csv":
            raise DataError(f"{p}: data path must be a folder (KSDD2 layout) or a manifest .csv")
        samples = read_manifest(p)
    else:
        samples = read_ksdd2(p)
    if split is not None:
        if split not in SPLITS:
            raise DataError(f"unknown split {split!r}; expected one of {SPLITS}")
        samples = [s for s in samples if s.split == split]
        if not samples:
            raise DataError(f"{p}: the {split} split is empty")
    return samples


def read_ksdd2(root: Path) -> list[Sample]:
    """``train/`` and ``test/`` with ``NNNNN.png`` and ``NNNNN_GT.png``; defect = non-empty mask."""
    samples: list[Sample] = []
    for split in SPLITS:
        folder = root / split
        if not folder.is_dir():
            continue
        for img in sorted(folder.iterdir()):
            if img.suffix.lower() not in IMAGE_SUFFIXES or img.stem.endswith("_GT"):
                continue
            mask = img.with_name(f"{img.stem}_GT{img.suffix}")
            if not mask.exists():
                mask = next(
                    (img.with_name(f"{img.stem}_GT{s}") for s in IMAGE_SUFFIXES
                     if img.with_name(f"{img.stem}_GT{s}").exists()),
                    None,
                )
            if mask is None:
                raise DataError(f"{img}: missing ground-truth mask {img.stem}_GT.png")
            samples.append(Sample(img, mask, int(mask_is_nonempty(mask)), split))
    if not samples:
        raise DataError(f"{root}: no images found in train/ or test/ (KSDD2 layout expected)")
    return samples


def read_manifest(csv_path: Path) -> list[Sample]:
    """Columns image, mask, label, split (paths relative to the CSV); extra columns ignored."""
    base = csv_path.parent
    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        missing = {"image", "label", "split"} - set(reader.fieldnames or [])
        if missing:
            raise DataError(f"{csv_path}: manifest lacks column(s) {sorted(missing)}")
        samples = []
        for lineno, row in enumerate(reader, start=2):
            label = LABELS.get(str(row["label"]).strip().lower())
            if label is None:
                raise DataError(f"{csv_path}:{lineno}: unknown label {row['label']!r}")
            split = row["split"].strip()
            if split not in SPLITS:
                raise DataError(f"{csv_path}:{lineno}: unknown split {split!r}")
            mask_field = (row.get("mask") or "").strip()
            mask = base / mask_field if mask_field else None
            image = base / row["image"].strip()
            if mask is not None and not mask.exists():
                raise DataError(f"{mask}: mask file listed in {csv_path}:{lineno} is missing")
            if label == 1 and mask is None:
                raise DataError(f"{image}: defect image has no mask ({csv_path}:{lineno})")
            samples.append(Sample(image, mask, label, split))
    if not samples:
        raise DataError(f"{csv_path}: manifest has no rows")
    return samples


@contextmanager
def _decoding(what: str) -> Iterator[None]:
    """Turn PIL's many failure types into one DataError naming the file."""
    try:
        yield
    except FileNotFoundError:
        raise DataError(f"{what}: file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise DataError(f"{what}: unreadable image ({err})") from None


def open_image(source: Path | str | bytes, name: str | None = None) -> Image.Image:
    """Decode an image file (or its bytes) fully; a bad one is a DataError naming ``name``."""
    with _decoding(name or str(source)):
        img = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
        img.load()
    return img


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the file's header alone: cheap enough for a whole data set."""
    with _decoding(str(path)), Image.open(path) as img:
        return img.size


def rgb_array(img: Image.Image, height: int | None = None, width: int | None = None
              ) -> np.ndarray:
    """RGB float32 array (H, W, 3) in [0, 1], resized to (height, width) when given: the
    detector's input (``ExDD.score``) from a decoded image."""
    img = img.convert("RGB")
    if height is not None and width is not None:
        img = img.resize((width, height), Image.BILINEAR)
    return np.asarray(img, dtype=np.float32) / 255.0


def read_image(path: Path, height: int | None = None, width: int | None = None) -> np.ndarray:
    """``rgb_array`` of an image file."""
    return rgb_array(open_image(Path(path)), height, width)


def read_mask(path: Path | None, height: int, width: int, threshold: int = 127,
              image_path: Path | None = None) -> np.ndarray:
    """Boolean defect mask resized to (height, width); an absent mask means no defect.

    With ``image_path`` given, the mask must have the image's own size (before resizing).
    """
    if path is None:
        return np.zeros((height, width), dtype=bool)
    m = open_image(Path(path))
    if image_path is not None:
        size = open_image(Path(image_path)).size
        if m.size != size:
            raise DataError(
                f"{path}: mask size {m.size[0]}x{m.size[1]} does not match image "
                f"{image_path} size {size[0]}x{size[1]}"
            )
    m = m.convert("L").resize((width, height), Image.BILINEAR)
    return np.asarray(m) > threshold


def mask_is_nonempty(path: Path, threshold: int = 127) -> bool:
    return bool((np.asarray(open_image(path).convert("L")) > threshold).any())
