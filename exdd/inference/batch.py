"""Batch scoring into a folder: ``scores.csv``, one heatmap overlay and one raw anomaly map
per image.

``exdd predict`` and the nightly run's review output share this one writer, so the
dashboard and a person at the command line read the same format. Overlays are pictures
for people; the maps (``maps/*.npy``, float16, the model's own map before any colour
scale) are what a defect mask is cut from, with the batch's colour scale recorded in
``map_min`` / ``map_max`` so that a mask level means what the overlay shows.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from exdd.detector.modelio import npy_bytes
from exdd.errors import DataError
from exdd.fsutil import atomic_dir, write_bytes_atomic
from exdd.inference.scores import SCORES_FILE, ScoreRow, scores_text

if TYPE_CHECKING:  # the model pulls in torch: only the scoring itself needs it
    from exdd.detector.model import ExDD

OVERLAYS_DIR = "overlays"
MAPS_DIR = "maps"
MAP_DTYPE = np.float16  # half of float32's bytes; far finer than any mask level


@dataclass(frozen=True)
class BatchResult:
    """What a batch gave: how many images were scored and flagged, which were unreadable."""

    n_scored: int
    n_flagged: int
    failed: list[tuple[Path, str]]  # (image, why it could not be read)


def split_readable(images: list[Path]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """The images that decode, and (image, reason) for those that do not: one bad file
    must not cost the batch."""
    from exdd.data.readers import open_image

    good, failed = [], []
    for path in images:
        try:
            open_image(path)
        except DataError as err:
            failed.append((path, str(err).removeprefix(f"{path}: ")))
        else:
            good.append(path)
    return good, failed


def save_map(path: Path, anomaly_map: np.ndarray) -> None:
    """One anomaly map as a float16 ``.npy`` file, atomically."""
    write_bytes_atomic(path, npy_bytes(np.asarray(anomaly_map, dtype=MAP_DTYPE)))


def read_map(path: Path) -> np.ndarray:
    """A map :func:`save_map` wrote, as float32 (H x W)."""
    try:
        amap = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise DataError(f"{path}: not a stored anomaly map ({err})") from None
    if amap.ndim != 2:
        raise DataError(f"{path}: an anomaly map must be H x W, got shape {amap.shape}")
    return amap.astype(np.float32)


def write_predictions(model: ExDD, images: list[Path], out: Path, threshold: float | None,
                      model_version: str | int = "", relative_to: Path | None = None
                      ) -> BatchResult:
    """Score the readable ``images`` into ``out`` atomically; unreadable ones get a row
    with the reason instead of a score. All unreadable is a DataError.

    Overlays keep each image's own shape and share one colour scale across the batch so
    that heat is comparable between images; maps keep the model's resolution; ``flag`` is
    empty when no threshold is known.
    """
    from exdd.data.readers import read_image
    from exdd.inference.overlays import save_overlay

    good, failed = split_readable(images)
    if not good:
        path, why = failed[0]
        raise DataError(f"none of the {len(images)} image(s) could be read; {path}: {why}")
    pred = model.predict(good)
    vmin, vmax = float(pred.maps.min()), float(pred.maps.max())
    rows: list[ScoreRow] = []

    def name(path: Path) -> str:
        return os.path.relpath(path, relative_to) if relative_to else str(path)

    with atomic_dir(out) as staging:
        for i, (path, score, amap) in enumerate(zip(good, pred.scores, pred.maps)):
            stem = f"{i:05d}_{path.stem}"
            overlay, raw = f"{OVERLAYS_DIR}/{stem}.png", f"{MAPS_DIR}/{stem}.npy"
            save_overlay(staging / overlay, read_image(path), amap, vmin, vmax)
            save_map(staging / raw, amap)
            flag = None if threshold is None else bool(score >= threshold)
            rows.append(ScoreRow(image=name(path), score=float(score), flag=flag,
                                 threshold=threshold, model_version=model_version,
                                 overlay=overlay, map=raw, map_min=vmin, map_max=vmax))
        rows += [ScoreRow(image=name(path), threshold=threshold, model_version=model_version,
                          error=why) for path, why in failed]
        (staging / SCORES_FILE).write_text(scores_text(rows))
    flagged = 0 if threshold is None else int((pred.scores >= threshold).sum())
    return BatchResult(len(good), flagged, failed)
