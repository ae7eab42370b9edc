"""ROC and precision-recall curves as plain CSV files, for ``dvc plots``.

``evaluate`` keeps its curves inside metrics.json as point lists; DVC plots want one table
per curve, so each becomes its own CSV (columns named as in metrics.json).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from exdd.errors import DataError
from exdd.fsutil import write_text_atomic

# metrics.json key -> (file name, x column, y column)
CURVES = {"roc": ("roc.csv", "fpr", "tpr"), "pr": ("pr.csv", "recall", "precision")}


def write_curves(metrics: dict[str, Any], out_dir: str | Path) -> list[Path]:
    """Write ``roc.csv`` and ``pr.csv`` from an evaluate() result; returns their paths."""
    written = []
    for key, (name, x, y) in CURVES.items():
        points = metrics.get(key)
        if not points:
            raise DataError(f"metrics hold no {key!r} curve: evaluate the model first")
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow([x, y])
        writer.writerows([p[x], p[y]] for p in points)
        path = Path(out_dir) / name
        write_text_atomic(path, buf.getvalue())
        written.append(path)
    return written
