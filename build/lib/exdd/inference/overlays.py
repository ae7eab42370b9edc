"""Pictures for people: heatmap overlays, overlay grids and ROC / PR plots.

Overlays share one (vmin, vmax) normalisation across a batch so that equal colours mean
equal anomaly scores on every image. Figures use the Agg canvas directly (no pyplot
global state), so they render headless and from worker threads; every file is written
atomically.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from exdd.errors import DataError
from exdd.fsutil import write_bytes_atomic

COLORMAP = "jet"
OVERLAY_ALPHA = 0.5  # weight of the heatmap in the blend
GRID_COLUMNS = 4
PANEL_INCHES = 2.5  # width of one grid panel; height follows the image aspect
PLOT_INCHES = (10.0, 4.5)  # ROC and PR side by side
DPI = 100


def normalise(anomaly_map: np.ndarray, vmin: float, vmax: float) -> np.ndarray:
    """Scale to [0, 1] with a fixed range (clipped), so batches stay comparable."""
    span = vmax - vmin
    if not span > 0:
        return np.zeros(anomaly_map.shape, dtype=np.float32)
    return np.clip((np.asarray(anomaly_map, dtype=np.float32) - vmin) / span, 0.0, 1.0)


def overlay(image_rgb: np.ndarray, anomaly_map: np.ndarray, vmin: float,
            vmax: float) -> np.ndarray:
    """Jet heatmap of ``anomaly_map`` alpha-blended over an RGB float image in [0, 1].

    A map of another size than the image is resized (bilinear) to the image first.
    """
    image = np.asarray(image_rgb, dtype=np.float32)
    amap = np.asarray(anomaly_map, dtype=np.float32)
    if image.ndim != 3 or image.shape[2] != 3:
        raise DataError(f"overlay needs an H x W x 3 RGB image, got shape {image.shape}")
    if amap.ndim != 2:
        raise DataError(f"overlay needs an H x W anomaly map, got shape {amap.shape}")
    if amap.shape != image.shape[:2]:
        size = (image.shape[1], image.shape[0])
        amap = np.asarray(Image.fromarray(amap).resize(size, Image.BILINEAR))
    heat = colormaps[COLORMAP](normalise(amap, vmin, vmax))[..., :3]
    blend = (1.0 - OVERLAY_ALPHA) * np.clip(image, 0.0, 1.0) + OVERLAY_ALPHA * heat
    return np.round(blend * 255.0).astype(np.uint8)


def save_overlay(path: str | Path, image_rgb: np.ndarray, anomaly_map: np.ndarray,
                 vmin: float, vmax: float) -> Path:
    """Write the overlay as a PNG, atomically."""
    buf = io.BytesIO()
    Image.fromarray(overlay(image_rgb, anomaly_map, vmin, vmax)).save(buf, format="PNG")
    write_bytes_atomic(path, buf.getvalue())
    return Path(path)


def overlay_grid(images: Sequence[np.ndarray], maps: Sequence[np.ndarray],
                 titles: Sequence[str], path: str | Path, vmin: float | None = None,
                 vmax: float | None = None, columns: int = GRID_COLUMNS) -> Path:
    """One PNG of titled overlays (e.g. an MLflow artifact), one shared colour scale.

    Without ``vmin`` / ``vmax`` the range of all ``maps`` together is used.
    """
    if not (len(images) == len(maps) == len(titles)) or not images:
        raise DataError(f"overlay grid needs as many images, maps and titles (got "
                        f"{len(images)}, {len(maps)}, {len(titles)}), at least one")
    lo = float(min(np.min(m) for m in maps)) if vmin is None else vmin
    hi = float(max(np.max(m) for m in maps)) if vmax is None else vmax
    cols = min(columns, len(images))
    rows = -(-len(images) // cols)
    h, w = np.asarray(images[0]).shape[:2]
    panel_h = PANEL_INCHES * h / w
    fig = Figure(figsize=(cols * PANEL_INCHES, rows * (panel_h + 0.4)), dpi=DPI)
    for i, (image, amap, title) in enumerate(zip(images, maps, titles)):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.imshow(overlay(image, amap, lo, hi))
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    return _save_figure(fig, path)


def plot_roc_pr(metrics: dict[str, Any], path: str | Path) -> Path:
    """Image-level ROC and PR curves side by side, AUROC / AP in the legends."""
    for key in ("roc", "pr", "image_auroc", "image_ap"):
        if key not in metrics:
            raise DataError(f"metrics lack {key!r}: cannot plot ROC / PR curves")
    fig = Figure(figsize=PLOT_INCHES, dpi=DPI)
    roc_ax, pr_ax = fig.subplots(1, 2)
    roc = metrics["roc"]
    roc_ax.plot([p["fpr"] for p in roc], [p["tpr"] for p in roc],
                label=f"AUROC {metrics['image_auroc']:.3f}")
    roc_ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=0.8, label="chance")
    roc_ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC",
               xlim=(0, 1), ylim=(0, 1.02))
    pr = metrics["pr"]
    pr_ax.plot([p["recall"] for p in pr], [p["precision"] for p in pr],
               label=f"AP {metrics['image_ap']:.3f}")
    pr_ax.set(xlabel="recall", ylabel="precision", title="Precision-recall",
              xlim=(0, 1), ylim=(0, 1.02))
    for ax in (roc_ax, pr_ax):
        ax.legend(loc="lower right" if ax is roc_ax else "lower left")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save_figure(fig, path)


def _save_figure(fig: Figure, path: str | Path) -> Path:
    buf = io.BytesIO()
    FigureCanvasAgg(fig).print_png(buf)
    write_bytes_atomic(path, buf.getvalue())
    return Path(path)
