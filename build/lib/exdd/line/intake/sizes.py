"""The intake's image-size policy: which widths, heights and aspect ratios a line accepts,
and when a night's sizes have changed (a size drift event).

Real lines rarely deliver one size (magnetic-tile: 1,225 sizes among 1,344 images), and
the detector resizes every image to its input size anyway, so the default policy bounds
only what it cannot use well (``IntakeConfig`` explains the policies). The reference is the
data set's accepted images, or the batch itself for a line's first night; a camera change
shows up as the batch's median size moving away from the data set's.
"""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pandas as pd

from exdd.config import IntakeConfig
from exdd.line.intake.manifest import DatasetProfile
from exdd.line.intake.table import KIND_NEW

Size = tuple[int, int]  # (width, height)
Range = tuple[float | None, float | None]  # (low, high); None: unbounded


@dataclass(frozen=True)
class SizeBounds:
    """The size expectations' bounds; ``origin`` says where the reference came from."""

    policy: str
    width: Range
    height: Range
    aspect: Range | None
    reference: tuple[float, float] | None
    origin: str


def batch_sizes(table: pd.DataFrame) -> list[Size]:
    """(width, height) of each decodable new image of the batch."""
    rows = table[(table["decodable"] == True) & (table["kind"] == KIND_NEW)]  # noqa: E712
    return list(zip(rows["width"].astype(int), rows["height"].astype(int)))


def _expand(sizes: Counter) -> list[Size]:
    return [size for size, n in sizes.items() for _ in range(n)]


def median_size(sizes: list[Size]) -> tuple[float, float]:
    return (float(statistics.median(w for w, _ in sizes)),
            float(statistics.median(h for _, h in sizes)))


def size_bounds(cfg: IntakeConfig, prof: DatasetProfile, table: pd.DataFrame) -> SizeBounds:
    """Bounds of ``cfg.size_policy``: params first, else the data set's, else the batch's."""
    derive = cfg.derive_from_dataset and prof.n_profiled > 0
    sizes = _expand(prof.sizes) if derive else batch_sizes(table)
    origin = ("dataset" if derive else "batch") if sizes else "none"
    side: Range = (cfg.min_side, None)
    policy = cfg.size_policy
    if policy == "any":
        return SizeBounds(policy, side, side, None, None, "params")
    if policy == "aspect":
        if cfg.aspect_range is not None:
            return SizeBounds(policy, side, side, cfg.aspect_range, None, "params")
        if not sizes:
            return SizeBounds(policy, side, side, None, None, origin)
        aspect = statistics.median(w / h for w, h in sizes)
        return SizeBounds(policy, side, side, (aspect / cfg.aspect_factor,
                                               aspect * cfg.aspect_factor),
                          median_size(sizes), origin)
    usual: tuple[float | None, float | None] = (None, None)
    if sizes:
        usual = Counter(sizes).most_common(1)[0][0] if policy == "exact" else median_size(sizes)
    width = cfg.expected_width or usual[0]
    height = cfg.expected_height or usual[1]
    if cfg.expected_width or cfg.expected_height:
        origin = "params" + (f" + {origin}" if sizes else "")
    tol = cfg.size_tolerance

    def around(value: float | None) -> Range:
        if value is None:
            return side
        return (value, value) if policy == "exact" else (max(cfg.min_side, value * (1 - tol)),
                                                         value * (1 + tol))

    reference = (width, height) if width and height else None
    return SizeBounds(policy, around(width), around(height), None, reference, origin)


def size_drift(cfg: IntakeConfig, prof: DatasetProfile, table: pd.DataFrame
               ) -> list[dict[str, Any]]:
    """A drift event when the batch's median width or height moved away from the data
    set's by more than ``drift_tolerance`` (relative); [] when it did not or cannot tell."""
    batch = batch_sizes(table)
    if prof.n_profiled == 0 or not batch:
        return []
    ref, now = median_size(_expand(prof.sizes)), median_size(batch)
    change = max(abs(n - r) / r for n, r in zip(now, ref))
    if change <= cfg.drift_tolerance:
        return []
    return [{
        "kind": "size", "dataset_median": list(ref), "batch_median": list(now),
        "change": round(change, 4), "tolerance": cfg.drift_tolerance,
        "message": (f"image size drift: the batch's median size {now[0]:g}x{now[1]:g} is "
                    f"{change:.0%} off the data set's {ref[0]:g}x{ref[1]:g} (camera change?)"),
    }]
