"""The quarantine: what is held and why, and an operator's release of held files.

Every quarantined file sits at ``DIR/quarantine/<batch>/files/<key>`` with its reason
``DIR/quarantine/<batch>/reasons/<key>.json`` (see ``exdd.line.intake.validate``). A release
does not wave files through: it delivers them, with their labels, to a fresh inbox beside
the data set and runs the very intake (same suite, same journal) on it, so a file whose
cause was fixed (in the params, say) joins the data set, and one that still fails is
quarantined again under the release's batch. Who released what, why, and what came of it
is appended to ``DIR/quarantine/releases.jsonl``.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from exdd.config import DataConfig, IntakeConfig
from exdd.errors import ConfigError, DataError
from exdd.fsutil import write_text_atomic
from exdd.line.intake.manifest import QUARANTINE_DIR
from exdd.line.intake.validate import IntakeResult, validate_inbox

RELEASES_NAME = "releases.jsonl"
SIDECAR_COLUMNS = ("image", "label", "mask", "split", "timestamp", "replaces")


@dataclass(frozen=True)
class Held:
    """One quarantined file: its batch, inbox key, data-set path, reason and checks."""

    batch: str
    key: str
    path: str  # relative to the data set
    reason_path: Path
    reason: dict[str, Any]

    @property
    def image(self) -> str | None:
        """For a mask: the key of the image it was quarantined with."""
        return self.reason.get("quarantined_with_image")

    @property
    def checks(self) -> list[str]:
        return [f.get("check") or f.get("expectation", "?") for f in self.reason["failed"]]


def list_quarantine(dataset: Path, batch: str | None = None) -> list[Held]:
    """Every file held in the data set's quarantine (of one batch), by batch and key."""
    root = Path(dataset) / QUARANTINE_DIR
    batches = [root / batch] if batch else sorted(p for p in root.glob("*") if p.is_dir())
    if batch and not batches[0].is_dir():
        raise DataError(f"{batches[0]}: no quarantined batch {batch!r}")
    held = []
    for folder in batches:
        for reason_path in sorted((folder / "reasons").rglob("*.json")):
            try:
                reason = json.loads(reason_path.read_text())
            except ValueError as err:
                raise DataError(f"{reason_path}: unreadable quarantine reason ({err})") from None
            rel = reason_path.relative_to(folder / "reasons").as_posix().removesuffix(".json")
            held.append(Held(folder.name, reason["file"],
                             f"{QUARANTINE_DIR}/{folder.name}/files/{rel}", reason_path, reason))
    return held


def _select(dataset: Path, batch: str | None, file: str | None) -> list[Held]:
    """The images asked for and the masks quarantined with them."""
    if batch is None and file is None:
        raise ConfigError("name the batch (--batch) or the file (--file) to release")
    held = list_quarantine(dataset, batch)
    images = [h for h in held if h.image is None and file in (None, h.key)]
    if not images:
        where = f"batch {batch}" if batch else "the quarantine"
        raise DataError(f"{Path(dataset) / QUARANTINE_DIR}: {where} holds no image {file!r}"
                        if file else f"{Path(dataset) / QUARANTINE_DIR}: {where} is empty")
    wanted = {(h.batch, h.key) for h in images}
    return images + [h for h in held if h.image and (h.batch, h.image) in wanted]


def _deliver(selected: list[Held], dataset: Path, inbox: Path, labels_file: str) -> None:
    """The held files into ``inbox`` as ``<batch>/<key>``, with their labels sidecar."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=SIDECAR_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for h in selected:
        dest = inbox / h.batch / h.key
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(dataset / h.path, dest)
        if h.image is not None:
            continue
        meta = h.reason.get("metadata", {})
        mask = meta.get("mask")
        writer.writerow({"image": f"{h.batch}/{h.key}", "label": meta.get("label") or "",
                         "mask": f"{h.batch}/{mask}" if mask else "",
                         "split": meta.get("split") or "", "timestamp": meta.get("timestamp") or "",
                         "replaces": meta.get("replaces") or ""})
    write_text_atomic(inbox / labels_file, out.getvalue())


def _prune(folder: Path) -> None:
    """Remove the empty folders under ``folder``, and ``folder`` itself when empty."""
    for d in sorted((p for p in folder.rglob("*") if p.is_dir()), reverse=True) + [folder]:
        if not any(d.iterdir()):
            d.rmdir()


def release(dataset: Path, cfg: IntakeConfig, data_cfg: DataConfig, reason: str, who: str,
            batch: str | None = None, file: str | None = None,
            report: Path | None = None) -> tuple[IntakeResult, dict[str, Any]]:
    """Re-validate held images (a batch, or one file) and their masks through the intake;
    returns the intake's result and the release record appended to the log."""
    dataset = Path(dataset)
    if not reason.strip():
        raise ConfigError("a release needs a reason (--reason)")
    selected = _select(dataset, batch, file)
    inbox = dataset.parent / f".{dataset.name}-release"
    shutil.rmtree(inbox, ignore_errors=True)  # a release that died before its intake
    _deliver(selected, dataset, inbox, cfg.labels_file)
    result = validate_inbox(str(inbox), dataset, report, cfg, data_cfg)
    for h in selected:  # each is filed anew: in the data set, or quarantined again
        (dataset / h.path).unlink(missing_ok=True)
        h.reason_path.unlink(missing_ok=True)
    for folder in {dataset / QUARANTINE_DIR / h.batch for h in selected}:
        _prune(folder)
    shutil.rmtree(inbox, ignore_errors=True)
    placed = result.placements
    record = {
        "released": datetime.now(timezone.utc).isoformat(timespec="seconds"), "who": who,
        "reason": reason, "batch": batch, "file": file, "intake_batch": result.batch,
        "passed": result.passed,
        "files": [{"batch": h.batch, "file": h.key,
                   "now": placed.get(f"{h.batch}/{h.key}")} for h in selected],
        "accepted": result.accepted, "quarantined": result.quarantined,
    }
    log = dataset / QUARANTINE_DIR / RELEASES_NAME
    old = log.read_text() if log.is_file() else ""
    write_text_atomic(log, old + json.dumps(record, sort_keys=True) + "\n")
    return result, record
