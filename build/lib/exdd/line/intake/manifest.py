"""The accepted data set: ``DIR/manifest.csv`` plus ``images/`` and ``masks/`` beside it.

Rows carry image, mask, label, split (read by ``exdd.data.readers.load_samples``) and the
provenance columns sha256, source, added. A folder that is still in KSDD2 layout without
a manifest is adopted as is: its samples become the first manifest rows.

A label update (an operator's verdict on an accepted image) rewrites that image's row;
``DIR/label_history.jsonl`` keeps, append-only, every row as it was before and after, so
no earlier label or mask is lost (old masks stay in ``masks/`` under their own names).
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from exdd.data.readers import SPLITS, load_samples
from exdd.errors import DataError
from exdd.fsutil import sha256_file
from exdd.line.intake.table import describe_image

MANIFEST_NAME = "manifest.csv"
COLUMNS = ("image", "mask", "label", "split", "sha256", "source", "added")
IMAGES_DIR = "images"
MASKS_DIR = "masks"
QUARANTINE_DIR = "quarantine"
LABELS_DIR = "labels"
HISTORY_NAME = "label_history.jsonl"


@dataclass
class DatasetProfile:
    """What the accepted data looks like: the source of the derived suite bounds."""

    n_images: int = 0
    n_profiled: int = 0
    sizes: Counter = field(default_factory=Counter)
    modes: Counter = field(default_factory=Counter)
    mean_min: float | None = None
    mean_max: float | None = None
    hashes: dict[str, str] = field(default_factory=dict)


def read_rows(dataset: Path) -> list[dict[str, str]]:
    """Manifest rows of ``dataset`` (sha256 always set); [] for a new data set; KSDD2
    folders are adopted."""
    manifest = dataset / MANIFEST_NAME
    if manifest.is_file():
        load_samples(manifest)  # the same validation every consumer applies
        with open(manifest, newline="") as f:
            rows = [{c: row.get(c) or "" for c in COLUMNS} for row in csv.DictReader(f)]
        for row in rows:  # hand-written manifests may lack hashes; duplicates need them
            row["sha256"] = row["sha256"] or sha256_file(dataset / row["image"])
        return rows
    if not any((dataset / split).is_dir() for split in SPLITS):
        return []
    try:
        samples = load_samples(dataset)
    except DataError as err:
        raise DataError(f"{dataset}: not a manifest data set nor KSDD2 layout ({err})") from None
    return [
        {
            "image": s.image.relative_to(dataset).as_posix(),
            "mask": s.mask.relative_to(dataset).as_posix() if s.mask else "",
            "label": "defect" if s.label else "normal",
            "split": s.split,
            "sha256": sha256_file(s.image),
            "source": "ksdd2-layout",
            "added": "",
        }
        for s in samples
    ]


def manifest_text(rows: list[dict[str, str]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def history_text(dataset: Path, entries: list[dict[str, object]]) -> str:
    """The label history with ``entries`` appended (earlier lines kept byte for byte)."""
    path = dataset / HISTORY_NAME
    old = path.read_text() if path.is_file() else ""
    if old and not old.endswith("\n"):
        old += "\n"
    return old + "".join(json.dumps(e, sort_keys=True) + "\n" for e in entries)


def profile(dataset: Path, rows: list[dict[str, str]], max_images: int) -> DatasetProfile:
    """Hashes of all accepted images; size, mode and intensity of an even sample of them."""
    prof = DatasetProfile(n_images=len(rows))
    for row in rows:
        prof.hashes.setdefault(row["sha256"], row["image"])
    step = max(1, -(-len(rows) // max_images))
    means = []
    for row in rows[::step]:
        info = describe_image(dataset / row["image"])
        if not info.decodable:
            raise DataError(f"{dataset / row['image']}: accepted image no longer decodes "
                            f"({info.error})")
        prof.sizes[(info.width, info.height)] += 1
        prof.modes[info.mode] += 1
        means.append(info.mean)
    prof.n_profiled = len(means)
    if means:
        prof.mean_min, prof.mean_max = min(means), max(means)
    return prof
