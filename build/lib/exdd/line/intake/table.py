"""The per-file metadata table that the great-expectations suite validates.

One row per inbox image: what the bytes are (hash, size, decodable, geometry, mode,
intensity), what the operator said about them (label, mask, split, capture time, from
the labels sidecar), and how they relate to other files (mask checks, duplicates). The
suite only ever sees this table, so every check has a column someone can inspect.

A row's ``kind`` is ``relabel`` when its sidecar ``replaces`` names a data-set image with
the very same bytes: the operator's verdict on an accepted image (``exdd.line.review`` exports
those), a label update rather than a new image. Every other row is ``new``.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd
from PIL import Image

from exdd.config import IntakeConfig
from exdd.errors import DataError

SIDECAR_REQUIRED = ("image", "label")
SIDECAR_OPTIONAL = ("mask", "split", "timestamp", "replaces")
KIND_NEW = "new"
KIND_RELABEL = "relabel"
TABLE_COLUMNS = (
    "path", "sha256", "kind", "replaces", "size_bytes", "suffix", "decodable", "decode_error",
    "width", "height", "aspect", "mode", "channels", "mean_intensity", "std_intensity", "label", "split",
    "timestamp", "duplicate_in_inbox", "duplicate_in_dataset", "mask", "mask_found",
    "mask_decodable", "mask_size_match", "mask_nonempty",
)


@dataclass(frozen=True)
class ImageInfo:
    """What decoding one file tells us; ``error`` is set when it does not decode."""

    decodable: bool
    error: str | None = None
    width: int | None = None
    height: int | None = None
    mode: str | None = None
    channels: int | None = None
    mean: float | None = None
    std: float | None = None
    max_value: int | None = None


@dataclass(frozen=True)
class LabelEntry:
    """One labels-sidecar row: the operator's label, mask key, split, capture time, and the
    data-set image (path relative to the data set) it is a verdict on, if any."""

    label: str
    mask: str | None = None
    split: str | None = None
    timestamp: str | None = None
    replaces: str | None = None


def describe_image(path: Path) -> ImageInfo:
    """Decode fully (truncation shows up here) and measure grey-level statistics."""
    try:
        with Image.open(path) as img:
            img.load()
            grey = np.asarray(img.convert("L"), dtype=np.float64)
            return ImageInfo(
                decodable=True, width=img.width, height=img.height, mode=img.mode,
                channels=len(img.getbands()), mean=float(grey.mean()), std=float(grey.std()),
                max_value=int(grey.max()),
            )
    except Exception as err:  # noqa: BLE001 - PIL raises many types; any means "not decodable"
        message = str(err).replace(repr(str(path)), "file").replace(str(path), "file")
        return ImageInfo(decodable=False, error=f"{type(err).__name__}: {message}")


def read_sidecar(data: bytes, name: str, keys: set[str]) -> dict[str, LabelEntry]:
    """Parse the labels CSV; a malformed sidecar is an error, never half-applied."""
    try:
        reader = csv.DictReader(io.StringIO(data.decode("utf-8-sig")))
        rows = list(reader)
    except (UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"{name}: unreadable labels CSV ({err})") from None
    missing = set(SIDECAR_REQUIRED) - set(reader.fieldnames or [])
    if missing:
        raise DataError(f"{name}: labels CSV lacks column(s) {sorted(missing)}")
    entries: dict[str, LabelEntry] = {}
    mask_owner: dict[str, str] = {}
    for lineno, row in enumerate(rows, start=2):
        image = (row.get("image") or "").strip()
        if not image:
            raise DataError(f"{name}:{lineno}: empty image name")
        if image in entries:
            raise DataError(f"{name}:{lineno}: image {image!r} listed twice")
        fields = {k: (row.get(k) or "").strip() or None for k in SIDECAR_OPTIONAL}
        mask = fields["mask"]
        if mask is not None and image in keys:
            if mask in mask_owner:
                raise DataError(f"{name}:{lineno}: mask {mask!r} listed for both "
                                f"{mask_owner[mask]!r} and {image!r}")
            mask_owner[mask] = image
        replaces = fields["replaces"] and PurePosixPath(fields["replaces"]).as_posix()
        entries[image] = LabelEntry((row.get("label") or "").strip(), mask,
                                    fields["split"], fields["timestamp"], replaces)
    clash = sorted(set(mask_owner) & {i for i in entries if i in keys})
    if clash:
        raise DataError(f"{name}: {clash[0]!r} is listed both as an image and as a mask")
    return entries


def mask_keys(labels: Mapping[str, LabelEntry], keys: set[str]) -> set[str]:
    """Inbox files that are masks: named by a sidecar row whose image is in the inbox."""
    return {e.mask for img, e in labels.items() if img in keys and e.mask in keys}


def build_table(
    files: Mapping[str, Path],
    hashes: Mapping[str, str],
    labels: Mapping[str, LabelEntry],
    dataset_hashes: Mapping[str, str],
    dataset_rows: Mapping[str, Mapping[str, str]],
    cfg: IntakeConfig,
    mask_threshold: int,
) -> pd.DataFrame:
    """One row per inbox image (masks and the sidecar excluded), in key order.

    ``dataset_hashes`` maps each accepted sha256 to its image, ``dataset_rows`` each image
    path to its manifest row. A relabel keeps its image's split; an inbox duplicate is a
    second file of the same kind and hash (for relabels: a second verdict on one image).
    """
    masks = mask_keys(labels, set(files))
    first_of_hash: dict[tuple[str, str], str] = {}
    rows = []
    for key in sorted(files):
        if key in masks:
            continue
        sha = hashes[key]
        entry = labels.get(key, LabelEntry(cfg.default_label))
        target = dataset_rows.get(entry.replaces or "")
        if target is not None and target["sha256"] != sha:
            target = None  # names an image with other bytes: not a verdict on it
        kind = KIND_NEW if target is None else KIND_RELABEL
        earlier = first_of_hash.setdefault((kind, sha), key)
        info = describe_image(files[key])
        row = {
            "path": key,
            "sha256": sha,
            "kind": kind,
            "replaces": None if target is None else entry.replaces,
            "size_bytes": files[key].stat().st_size,
            "suffix": Path(key).suffix.lower(),
            "decodable": info.decodable,
            "decode_error": info.error,
            "width": info.width,
            "height": info.height,
            "aspect": info.width / info.height if info.decodable else None,
            "mode": info.mode,
            "channels": info.channels,
            "mean_intensity": info.mean,
            "std_intensity": info.std,
            "label": entry.label,
            "split": entry.split or cfg.default_split if target is None else target["split"],
            "timestamp": entry.timestamp,
            "duplicate_in_inbox": earlier if earlier != key else None,
            "duplicate_in_dataset": dataset_hashes.get(sha),
            **_mask_columns(entry.mask, files, info, mask_threshold),
        }
        rows.append(row)
    return pd.DataFrame(rows, columns=list(TABLE_COLUMNS))


def _mask_columns(mask: str | None, files: Mapping[str, Path], image: ImageInfo,
                  threshold: int) -> dict[str, object]:
    """Mask checks; None where they do not apply (no mask named, or no mask file)."""
    cols: dict[str, object] = {"mask": mask, "mask_found": None, "mask_decodable": None,
                               "mask_size_match": None, "mask_nonempty": None}
    if mask is None:
        return cols
    cols["mask_found"] = mask in files
    if not cols["mask_found"]:
        return cols
    info = describe_image(files[mask])
    cols["mask_decodable"] = info.decodable
    if info.decodable:
        cols["mask_nonempty"] = bool(info.max_value is not None and info.max_value > threshold)
        if image.decodable:
            cols["mask_size_match"] = (info.width, info.height) == (image.width, image.height)
    return cols

