"""The network input size: from the data's own shape unless the settings fix it.

Real lines have tall, wide and square parts. Squashing all of them into one square warps
thin defects (a crack in a 500 x 1260 image loses two thirds of its length resolution
across), so by default the input keeps the training images' median aspect ratio at a
fixed pixel budget (the cost of a forward pass and of the bank search scales with pixels),
each side rounded to the backbone's stride so that every patch-grid cell covers whole
pixels. The size is resolved once, at fit, and saved with the model: predict, maps,
overlays and metrics all use the model's size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from statistics import median

from exdd.data.readers import image_size
from exdd.detector.settings import INPUT_PRESETS, DataConfig
from exdd.errors import ConfigError


def parse_input_size(text: str) -> tuple[int, int] | str:
    """``HxW`` -> (H, W); a preset name stays a name. Bad text is a one-line error."""
    if text in INPUT_PRESETS:
        return text
    parts = text.lower().split("x")
    if len(parts) == 2 and all(p.strip().isdigit() for p in parts):
        return int(parts[0]), int(parts[1])
    raise ConfigError(f"input size {text!r}: give HxW (e.g. 632x224) or a preset "
                      f"({', '.join(sorted(INPUT_PRESETS))})")


def with_input_size(data: DataConfig, text: str) -> DataConfig:
    """``data`` with the size named by ``--input-size`` (``HxW`` or a preset)."""
    size = parse_input_size(text)
    if isinstance(size, str):
        return data.model_copy(update={"preset": size, "image_height": None, "image_width": None})
    return data.model_copy(update={"preset": None, "image_height": size[0],
                                   "image_width": size[1]})


def _round_to(value: float, stride: int, minimum: int) -> int:
    return max(minimum, int(round(value / stride)) * stride)


def resolve_input_size(data: DataConfig, images: Sequence[Path], stride: int, min_size: int,
                       backbone: str) -> DataConfig:
    """``data`` with both ``image_height`` and ``image_width`` set.

    Explicit sizes win, then a preset; a missing side follows the data's median aspect
    ratio (height / width of ``images``, read from their headers only), both missing ones
    the pixel budget too.
    """
    height, width = data.image_height, data.image_width
    if data.preset is not None:
        height, width = INPUT_PRESETS[data.preset]
    if height is None or width is None:
        if not images:
            raise ConfigError("the input size follows the training images, but there are none")
        aspect = median(h / w for w, h in (image_size(p) for p in images))
        if height is None and width is None:
            exact_height = math.sqrt(data.pixel_budget * aspect)  # h * w = budget, h / w = aspect
            height = _round_to(exact_height, stride, min_size)
            width = _round_to(data.pixel_budget / exact_height, stride, min_size)
        elif height is None:
            height = _round_to(width * aspect, stride, min_size)
        else:
            width = _round_to(height / aspect, stride, min_size)
    for name, value in (("image_height", height), ("image_width", width)):
        if value < min_size:
            raise ConfigError(f"data.{name} {value} is below {backbone}'s minimum input size "
                              f"{min_size} px")
    return data.model_copy(update={"image_height": height, "image_width": width,
                                   "preset": None})
