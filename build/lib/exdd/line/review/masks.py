"""Operator masks: the region of a defect verdict, cut from the image's stored anomaly map
at a level of the overlay's colour scale, or drawn by the operator and uploaded.

Masks are saved as 0/255 PNGs of the image's own size under fresh names in the workspace
(``review.masks_dir``); the verdict records the name and the export copies the file.
"""

from __future__ import annotations

import io
import uuid
from pathlib import Path

import numpy as np
from PIL import Image

from exdd.config import ReviewConfig
from exdd.data.readers import image_size, open_image
from exdd.errors import DataError
from exdd.fsutil import write_bytes_atomic
from exdd.inference.batch import read_map
from exdd.inference.overlays import normalise


def mask_from_map(map_path: Path, scale: tuple[float, float], image_path: Path,
                  level: float) -> np.ndarray:
    """Where the stored anomaly map, resized to the image's own size and put on the
    overlay's colour scale (``scale``: the values drawn coldest / hottest), is at or above
    ``level`` (0..1): the region the operator sees hot in the overlay."""
    amap = Image.fromarray(read_map(map_path), mode="F").resize(image_size(image_path),
                                                                 Image.BILINEAR)
    return normalise(np.asarray(amap), *scale) >= level


def mask_from_upload(data: bytes, image_path: Path, threshold: int, name: str = "upload"
                     ) -> np.ndarray:
    """An operator-drawn mask file (any image, white = defect) of the image's own size."""
    mask = open_image(data, name)
    size = open_image(image_path, str(image_path)).size
    if mask.size != size:
        raise DataError(f"{name}: mask size {mask.size[0]}x{mask.size[1]} does not match "
                        f"image {image_path.name} size {size[0]}x{size[1]}")
    return np.asarray(mask.convert("L")) > threshold


def save_mask(mask: np.ndarray, path: Path) -> Path:
    """A binary mask as a 0/255 PNG, atomically; an empty mask is refused."""
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        raise DataError(f"{path}: the mask is empty: no defect pixels selected")
    buf = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8) * 255, mode="L").save(buf, format="PNG")
    write_bytes_atomic(path, buf.getvalue())
    return path


def new_mask_path(cfg: ReviewConfig, image: str) -> str:
    """A fresh workspace-relative path for an operator mask (never overwrites an earlier one)."""
    return str(Path(cfg.masks_dir) / f"{Path(image).stem}-{uuid.uuid4().hex[:12]}.png")
