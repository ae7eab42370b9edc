"""Encoded images from a client: checked in memory, scored by the model's own reader.

A client sends bytes, never a file name: nothing it sends can make the server open one of
its own files. The checks happen before any scoring, so a bad image is rejected with a
message about that image (its part name, never a server path). The bytes are decoded in
memory by the same reader as ``exdd predict`` (exdd.data.readers.rgb_array) and scored as
arrays (``ExDD.score``), so both give the same scores.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, UnidentifiedImageError

from exdd.errors import DataError

if TYPE_CHECKING:  # torch: only scoring needs it
    from exdd.detector.model import ExDD, Prediction

BAD_REQUEST, TOO_LARGE, UNSUPPORTED = 400, 413, 415


class ImageError(DataError):
    """A client's image that cannot be scored; ``status`` is the HTTP status to answer."""

    def __init__(self, message: str, status: int = BAD_REQUEST) -> None:
        super().__init__(message)
        self.status = status


def check_image(data: bytes, name: str, formats: Sequence[str], max_pixels: int) -> str:
    """Decode ``data`` fully; returns its format. ImageError says what is wrong with it."""
    if not data:
        raise ImageError(f"{name}: empty (zero bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            fmt = img.format or "?"
            if fmt not in formats:
                raise ImageError(f"{name}: {fmt} images are not accepted "
                                 f"(accepted: {', '.join(formats)})", UNSUPPORTED)
            if img.width * img.height > max_pixels:
                raise ImageError(f"{name}: {img.width}x{img.height} pixels is over the limit of "
                                 f"{max_pixels}", TOO_LARGE)
            img.load()
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not an image (accepted: {', '.join(formats)})",
                         UNSUPPORTED) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(f"{name}: too many pixels to decode", TOO_LARGE) from None
    except (OSError, SyntaxError, ValueError, EOFError):
        raise ImageError(f"{name}: truncated or corrupt {fmt} image") from None
    return fmt


def score_bytes(model: ExDD, blobs: Sequence[bytes], keep_images: bool = False
                ) -> tuple[Prediction, list[np.ndarray]]:
    """Scores and maps of encoded images, and (``keep_images``) the RGB input the model saw,
    for overlays."""
    from exdd.data.readers import open_image, rgb_array
    from exdd.detector.model import IO_THREADS
    from exdd.detector.prefetch import ordered_map

    h, w = model.input_size

    def decode(item: tuple[int, bytes]) -> tuple[np.ndarray, np.ndarray | None]:
        """The model's input and (``keep_images``) the image at its own shape, for overlays."""
        img = open_image(item[1], f"image {item[0]}")
        return rgb_array(img, h, w), (rgb_array(img) if keep_images else None)

    decoded = list(ordered_map(decode, enumerate(blobs), IO_THREADS, ahead=max(1, len(blobs))))
    pred = model.score([inputs for inputs, _ in decoded])
    return pred, [own for _, own in decoded if own is not None]
