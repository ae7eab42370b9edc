"""Batch scoring into a folder: ``scores.csv`` plus one heatmap overlay per image.

``exdd predict`` and the nightly run's review output share this one writer, so the
dashboard and a person at the command line read the same format.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import TYPE_CHECKING

from exdd.fsutil import atomic_dir

if TYPE_CHECKING:  # the model pulls in torch: only the scoring itself needs it
    from exdd.model import ExDD

SCORES_FILE = "scores.csv"
OVERLAYS_DIR = "overlays"
SCORE_COLUMNS = ("image", "score", "flag", "threshold", "model_version", "overlay")


def write_predictions(model: ExDD, images: list[Path], out: Path, threshold: float | None,
                      model_version: str | int = "", relative_to: Path | None = None) -> int:
    """Score ``images`` into ``out`` atomically; returns how many were flagged.

    Overlays keep each image's own shape and share one colour scale across the batch so
    that heat is comparable between images; ``flag`` is empty when no threshold is known.
    """
    from exdd.datasets import read_image
    from exdd.visualize import save_overlay

    pred = model.predict(images)
    vmin, vmax = float(pred.maps.min()), float(pred.maps.max())
    rows = io.StringIO()
    writer = csv.writer(rows)
    writer.writerow(SCORE_COLUMNS)
    with atomic_dir(out) as staging:
        for i, (path, score, amap) in enumerate(zip(images, pred.scores, pred.maps)):
            overlay = f"{OVERLAYS_DIR}/{i:05d}_{path.stem}.png"
            save_overlay(staging / overlay, read_image(path), amap, vmin, vmax)
            flag = "" if threshold is None else int(score >= threshold)
            name = os.path.relpath(path, relative_to) if relative_to else str(path)
            writer.writerow([name, repr(float(score)), flag,
                             "" if threshold is None else threshold, model_version, overlay])
        (staging / SCORES_FILE).write_text(rows.getvalue())
    return 0 if threshold is None else int((pred.scores >= threshold).sum())
