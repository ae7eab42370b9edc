"""Relabel export: definite verdicts into the line's inbox, for the next night to learn from.

Each pending defect/normal verdict becomes the image, its 0/255 mask (``<name>_GT.png``)
and a row of the labels sidecar in the line's inbox (a folder or ``s3://``,
``exdd.line.intake.inbox``), in the format ``exdd validate`` reads.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from exdd.config import LineConfig, Params
from exdd.errors import DataError
from exdd.fsutil import locked
from exdd.line.intake.inbox import open_inbox
from exdd.line.lines import inbox_uri
from exdd.line.review.verdicts import VerdictStore

LABEL_COLUMNS = ("image", "label", "mask", "replaces")
MASK_SUFFIX = "_GT"  # the project's mask naming (KSDD2 layout)


@dataclass(frozen=True)
class ExportResult:
    exported: list[str]  # inbox image names written
    held: list[tuple[str, str]]  # (image, why it is not exported yet)


def inbox_name(image: str) -> str:
    """Unique, stable inbox file name: nightly folders reuse stems, so add a path hash."""
    p = Path(image)
    digest = hashlib.sha256(image.encode("utf-8")).hexdigest()[:10]
    return f"review-{p.stem}-{digest}{p.suffix.lower()}"


def _merge_labels(existing: bytes | None, rows: Sequence[dict[str, str]], name: str) -> bytes:
    """The labels sidecar with ``rows`` added or replaced (keyed by image); rows and
    columns another writer put there are kept."""
    fields: list[str] = list(LABEL_COLUMNS)
    kept: list[dict[str, str]] = []
    if existing:
        reader = csv.DictReader(io.StringIO(existing.decode("utf-8-sig")))
        if "image" not in (reader.fieldnames or []):
            raise DataError(f"{name}: labels file lacks the 'image' column")
        fields = list(reader.fieldnames or []) + [
            c for c in LABEL_COLUMNS if c not in (reader.fieldnames or [])]
        kept = list(reader)
    by_image = {r["image"]: r for r in kept}
    for row in rows:
        by_image[row["image"]] = {**by_image.get(row["image"], {}), **row}
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(by_image.values())
    return buf.getvalue().encode("utf-8")


def export_pending(store: VerdictStore, params: Params, line: LineConfig,
                   workspace: Path) -> ExportResult:
    """Write every pending defect/normal verdict of ``line`` into its inbox: the image, its
    mask, then the row of the labels sidecar, each written whole, so a sidecar row never
    names a missing file. A defect without a mask is held back (validation would
    quarantine it); unsure verdicts are never exported. A re-run after a crash rewrites
    the same files: export is idempotent.

    ``replaces`` names the data-set file (relative to the data set, as in its manifest) an
    image already is, when it is one: a verdict on a night's accepted image is a relabel.
    """
    workspace = Path(workspace)
    inbox = open_inbox(inbox_uri(line, workspace), create=True)
    labels = params.intake.labels_file
    dataset = (workspace / line.dataset).resolve()
    exported: list[str] = []
    held: list[tuple[str, str]] = []
    with locked(workspace / params.review.export_lock):
        for verdict in store.pending_exports(line.name):
            if verdict.verdict == "defect" and not verdict.mask_path:
                held.append((verdict.image, "defect without a mask"))
                continue
            source = workspace / verdict.image
            if not source.is_file():
                held.append((verdict.image, f"image {source} is missing"))
                continue
            name = inbox_name(verdict.image)
            inbox.write(name, source.read_bytes())
            mask = ""
            if verdict.verdict == "defect":
                mask = f"{Path(name).stem}{MASK_SUFFIX}.png"
                inbox.write(mask, (workspace / verdict.mask_path).read_bytes())
            original = source.resolve()
            replaces = (original.relative_to(dataset).as_posix()
                        if original.is_relative_to(dataset) else "")
            row = {"image": name, "label": verdict.verdict, "mask": mask, "replaces": replaces}
            inbox.write(labels, _merge_labels(inbox.read(labels), [row], f"{line.inbox}/{labels}"))
            store.mark_exported(verdict, name)
            exported.append(name)
    return ExportResult(exported, held)
