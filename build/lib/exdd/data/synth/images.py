"""Image conversions shared by the defect renderers: files <-> float arrays <-> 8-bit masks.

Synthetic samples keep their source's channel count (grey stays grey), and masks are
written as 0/255 like KSDD2 ground truth.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from exdd.errors import DataError

# PIL modes treated as single-channel grey; everything else becomes RGB.
GRAY_MODES = ("1", "L", "I", "I;16", "F")


def open_image(path: Path) -> Image.Image:
    """Load an image fully, or raise a DataError naming the file."""
    try:
        with Image.open(path) as img:
            img.load()
            return img.copy()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise DataError(f"{path}: unreadable image ({err})") from None


def is_gray(img: Image.Image) -> bool:
    return img.mode in GRAY_MODES


def to_float(img: Image.Image) -> np.ndarray:
    """PIL image -> (H, W, C) float32 in [0, 1]; C is 1 for grey sources, else 3."""
    arr = np.asarray(img.convert("L" if is_gray(img) else "RGB"), dtype=np.float32) / 255.0
    return arr[..., None] if arr.ndim == 2 else arr


def to_image(arr: np.ndarray) -> Image.Image:
    """(H, W, C) float in [0, 1] -> 8-bit L or RGB image."""
    u8 = np.round(np.clip(arr, 0.0, 1.0) * 255.0).astype(np.uint8)
    return Image.fromarray(u8[..., 0] if u8.shape[2] == 1 else u8)


def mask_image(mask: np.ndarray) -> Image.Image:
    """Boolean mask -> 0/255 8-bit image (KSDD2 ground truth)."""
    return Image.fromarray(np.where(mask, 255, 0).astype(np.uint8))
