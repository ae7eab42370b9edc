"""``validate_inbox``: fetch, describe, validate, then file every inbox file exactly once.

Accepted images go to ``DIR/images/`` (masks to ``DIR/masks/``) under content-addressed
names, with a manifest row each; failed ones go to ``DIR/quarantine/<batch>/files/`` with
a JSON reason per file in ``DIR/quarantine/<batch>/reasons/`` naming the expectations they
broke. The labels sidecar is kept as ``DIR/labels/<batch>.csv``. The batch id is a hash
of the inbox's names and contents, so a re-run of an interrupted batch files everything
to the same places. See ``exdd.line.intake.journal`` for the crash-safety protocol.

A batch that fails (more than ``max_failed_fraction`` of its files failed, or a batch-level
check) is held whole: its good files go to the quarantine too, with the reason
``exdd_batch_passes``, so nothing of it reaches training until an operator releases it
(``exdd.line.intake.release``). A change of the batch's image sizes is reported as drift.

A label update (a sidecar row whose ``replaces`` names a data-set image with the same
bytes, see ``exdd.line.intake.table``) that passes changes that image's manifest row (label,
mask; its old mask stays) and appends to ``DIR/label_history.jsonl``; its inbox image
needs no new copy: its placement is the data-set image it relabels.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm import tqdm

from exdd.config import DataConfig, IntakeConfig
from exdd.errors import DataError
from exdd.fsutil import locked, sha256_file, write_text_atomic
from exdd.line.intake.inbox import Inbox, InboxFile, LocalInbox, open_inbox
from exdd.line.intake.journal import REPORT_STAGING, Journal, Move, apply
from exdd.line.intake.manifest import (
    HISTORY_NAME,
    IMAGES_DIR,
    LABELS_DIR,
    MANIFEST_NAME,
    MASKS_DIR,
    QUARANTINE_DIR,
    history_text,
    manifest_text,
    profile,
    read_rows,
)
from exdd.line.intake.sizes import size_drift
from exdd.line.intake.suite import Bounds, Outcome, derive_bounds, jsonable, run_suite
from exdd.line.intake.table import KIND_RELABEL, build_table, read_sidecar

log = logging.getLogger(__name__)

WORK_DIR = ".intake"
REPORT_JSON = "intake.json"
DATA_DOCS_DIR = "data_docs"
NAME_HASH_CHARS = 16
BATCH_HASH_CHARS = 12
BATCH_CHECK = "exdd_batch_passes"  # the reason of a file held with its failed batch


@dataclass
class IntakeResult:
    """What one intake did; ``passed`` is False when the pipeline must stop."""

    batch: str
    n_total: int
    n_accepted: int
    n_quarantined: int
    accepted: list[str]  # data-set-relative image paths
    quarantined: list[str]  # data-set-relative image paths under quarantine/
    report_path: Path | None
    passed: bool
    failed_fraction: float = 0.0
    placements: dict[str, str] = field(default_factory=dict)  # every inbox key -> its path
    batch_failures: list[str] = field(default_factory=list)  # failed table-level checks
    kept_in_inbox: list[str] = field(default_factory=list)  # changed while we ran
    skipped_links: list[str] = field(default_factory=list)  # symbolic links: left, not followed
    n_relabelled: int = 0  # label updates of accepted images (not in n_accepted)
    relabelled: list[str] = field(default_factory=list)  # their data-set image paths
    n_held: int = 0  # passed their own checks, quarantined with the failed batch
    drift: list[dict[str, Any]] = field(default_factory=list)  # e.g. a size change

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "report_path": str(self.report_path) if self.report_path else None}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> "IntakeResult":
        report = raw.get("report_path")
        return cls(**{**raw, "report_path": Path(report) if report else None})


def validate_inbox(inbox: str, dataset: Path, report: Path | None, cfg: IntakeConfig,
                   data_cfg: DataConfig | None = None) -> IntakeResult:
    """Validate every file in ``inbox`` and file it into ``dataset`` or its quarantine.

    ``report`` defaults to ``<dataset>-reports/<batch>`` beside the data set. An
    unfinished earlier intake of the same data set is finished first and its result
    returned; run again for files that arrived since.
    """
    dataset = Path(dataset)
    dataset.mkdir(parents=True, exist_ok=True)
    source = open_inbox(str(inbox))
    if isinstance(source, LocalInbox):
        _check_apart(source.root, dataset)
    threshold = (data_cfg or DataConfig()).mask_threshold
    work = dataset / WORK_DIR
    with locked(dataset, busy="another intake is running on this data set"):
        journal = Journal.load(work)
        if journal is None:
            shutil.rmtree(work, ignore_errors=True)  # an attempt that never committed
            try:
                journal = _plan(source, dataset, report, cfg, threshold, work)
            except BaseException:
                shutil.rmtree(work, ignore_errors=True)  # nothing was committed: old state
                raise
        elif journal.inbox != source.uri:
            raise DataError(f"{dataset}: an intake from {journal.inbox} is unfinished; "
                            f"re-run it with --inbox {journal.inbox}")
        else:
            log.warning("finishing the interrupted intake of batch %s", journal.batch)
        kept = apply(journal, work, dataset, source)
    result = IntakeResult.from_json(journal.result)
    result.kept_in_inbox = kept
    result.skipped_links = source.symlinks if isinstance(source, LocalInbox) else []
    for key in result.skipped_links:
        log.warning("%s/%s is a symbolic link: not followed, left in the inbox", source.uri, key)
    return result


def _check_apart(inbox: Path, dataset: Path) -> None:
    a, b = inbox.resolve(), dataset.resolve()
    if a == b or a.is_relative_to(b) or b.is_relative_to(a):
        raise DataError(f"{inbox}: the inbox and the data set {dataset} must not overlap")


def _fetch(source: Inbox, work: Path) -> tuple[list[InboxFile], dict[str, Path], dict[str, str]]:
    items = source.list()
    paths: dict[str, Path] = {}
    hashes: dict[str, str] = {}
    for i, item in enumerate(tqdm(items, desc="fetch", unit="file", disable=not items)):
        paths[item.key] = work / "files" / f"{i:06d}"
        try:
            source.fetch(item, paths[item.key])
        except DataError:
            raise
        except Exception as err:  # boto3 / OS errors: nothing has changed yet, re-run later
            raise DataError(f"{source.uri}/{item.key}: cannot fetch ({err})") from None
        hashes[item.key] = sha256_file(paths[item.key])
    return items, paths, hashes


def _plan(source: Inbox, dataset: Path, report: Path | None, cfg: IntakeConfig,
          threshold: int, work: Path) -> Journal:
    """Steps 1-2 of the journal protocol: everything staged, then the journal committed."""
    old_rows = read_rows(dataset)
    prof = profile(dataset, old_rows, cfg.profile_max_images)
    items, paths, hashes = _fetch(source, work)
    batch = hashlib.sha256("".join(f"{k}\t{h}\n" for k, h in sorted(hashes.items()))
                           .encode()).hexdigest()[:BATCH_HASH_CHARS]
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")

    sidecar = paths.get(cfg.labels_file)
    files = {k: p for k, p in paths.items() if k != cfg.labels_file}
    labels = {} if sidecar is None else read_sidecar(
        sidecar.read_bytes(), f"{source.uri}/{cfg.labels_file}", set(files))
    rows_by_image = {r["image"]: r for r in old_rows}
    table = build_table(files, hashes, labels, prof.hashes, rows_by_image, cfg, threshold)
    bounds = derive_bounds(cfg, prof, table)
    outcome = run_suite(table, bounds, work / REPORT_STAGING / DATA_DOCS_DIR)
    n_total = len(table)
    n_failed = n_total if outcome.table_failures else len(outcome.row_failures)
    fraction = n_failed / n_total if n_total else 0.0
    passed = not outcome.table_failures and fraction <= cfg.max_failed_fraction
    # a failed batch is held whole: nothing of it reaches training until released
    held = [] if passed else [{
        "expectation": BATCH_CHECK, "column": None,
        "check": f"the batch passed ({fraction:.0%} of its files failed, at most "
                 f"{cfg.max_failed_fraction:.0%} allowed); held until released"}]

    by_key = {i.key: i for i in items}
    moves: list[Move] = []
    placements: dict[str, str] = {}

    def move(key: str, dest: str, in_place: bool = False) -> None:
        item = by_key[key]
        staged = None if in_place else paths[key].relative_to(work).as_posix()
        moves.append(Move(staged, dest, hashes[key], key, item.size, item.version))
        placements[key] = dest

    def generated(name: str, dest: str, text: str) -> None:
        write_text_atomic(work / name, text)
        moves.append(Move(name, dest, hashlib.sha256(text.encode()).hexdigest()))

    def label(row: dict[str, Any]) -> str:
        return "defect" if row["label"] == cfg.defect_label else "normal"

    qdir = f"{QUARANTINE_DIR}/{batch}"
    new_rows, accepted, quarantined, relabelled, history = [], [], [], [], []
    for row in table.to_dict("records"):
        key, sha = row["path"], row["sha256"]
        failed = outcome.row_failures.get(key, []) + outcome.table_failures or held
        mask = row["mask"] if row["mask_found"] else None
        if not failed and row["kind"] == KIND_RELABEL:
            target = row["replaces"]
            move(key, target, in_place=True)
            mask_dest = ""
            if mask:  # named by both hashes: never overwrites the image's earlier mask
                mask_dest = (f"{MASKS_DIR}/{sha[:NAME_HASH_CHARS]}_GT-"
                             f"{hashes[mask][:NAME_HASH_CHARS]}{Path(mask).suffix.lower()}")
                move(mask, mask_dest)
            old = rows_by_image[target]
            rows_by_image[target] = {**old, "label": label(row), "mask": mask_dest}
            history.append({"image": target, "sha256": sha, "batch": batch, "changed": now,
                            "source": f"{source.uri}/{key}", "old": old,
                            "new": rows_by_image[target]})
            relabelled.append(target)
            continue
        if not failed:
            dest = f"{IMAGES_DIR}/{sha[:NAME_HASH_CHARS]}{row['suffix']}"
            move(key, dest)
            mask_dest = ""
            if mask:
                mask_dest = f"{MASKS_DIR}/{sha[:NAME_HASH_CHARS]}_GT{Path(mask).suffix.lower()}"
                move(mask, mask_dest)
            new_rows.append({
                "image": dest, "mask": mask_dest, "label": label(row),
                "split": row["split"], "sha256": sha, "source": f"{source.uri}/{key}",
                "added": now,
            })
            accepted.append(dest)
            continue
        for file_key, extra in ((key, {}), (mask, {"quarantined_with_image": key})):
            if file_key is None:
                continue
            move(file_key, f"{qdir}/files/{_safe_key(file_key)}")
            reason = {"file": file_key, "inbox": source.uri, "sha256": hashes[file_key],
                      "batch": batch, "quarantined": now, **extra, "failed": failed,
                      "metadata": jsonable(row)}
            generated(f"reasons/{len(moves):06d}.json",
                      f"{qdir}/reasons/{_safe_key(file_key)}.json", json.dumps(reason, indent=1))
        quarantined.append(placements[key])
    if sidecar is not None:
        move(cfg.labels_file, f"{LABELS_DIR}/{batch}.csv")
    if history:
        generated(HISTORY_NAME, HISTORY_NAME, history_text(dataset, history))
    if new_rows or history:  # last: the manifest never names a file that is not in place yet
        updated = [rows_by_image[r["image"]] for r in old_rows]
        generated(MANIFEST_NAME, MANIFEST_NAME, manifest_text(updated + new_rows))

    unfiled = set(by_key) - set(placements)
    if unfiled:  # a bug guard: no inbox file may ever be skipped
        raise DataError(f"{source.uri}: intake would leave {sorted(unfiled)[:3]} unfiled")
    clashes = [d for d, n in Counter(m.dest for m in moves).items() if n > 1]
    if clashes:  # e.g. S3 keys 'a/../b' and 'a/_/b': refuse rather than overwrite one
        raise DataError(f"{source.uri}: two inbox files would both be stored as {clashes[0]}")
    report_dir = (Path(report) if report is not None else
                  dataset.parent / f"{dataset.name}-reports" / batch).absolute()
    batch_failures = [f"{f['check']} (observed {f.get('observed')})"
                      for f in outcome.table_failures]
    result = IntakeResult(batch, n_total, len(accepted), len(quarantined), accepted,
                          quarantined, report_dir, passed, fraction, placements, batch_failures,
                          n_relabelled=len(relabelled), relabelled=relabelled,
                          n_held=len(quarantined) - n_failed if held else 0,
                          drift=size_drift(cfg, prof, table))
    orphans = sorted(set(labels) - set(files))
    _write_report(work, result, source.uri, dataset, bounds, outcome, table, orphans)
    journal = Journal(batch, source.uri, moves, str(report_dir), result.to_json())
    journal.save(work)  # the commit point
    return journal


def _safe_key(key: str) -> str:
    """An inbox key as a relative path that cannot leave its folder ('..', '.', '' -> '_')."""
    return "/".join(part if part not in ("", ".", "..") else "_" for part in key.split("/"))


def _write_report(work: Path, result: IntakeResult, inbox: str, dataset: Path, bounds: Bounds,
                  outcome: Outcome, table: pd.DataFrame, orphans: list[str]) -> None:
    files = [
        {**jsonable(row), "placed_at": result.placements.get(row["path"]),
         "failed": outcome.row_failures.get(row["path"], []) + outcome.table_failures}
        for row in table.to_dict("records")
    ]
    body = {
        "summary": {k: v for k, v in result.to_json().items() if k != "placements"},
        "inbox": inbox, "dataset": str(dataset), "bounds": asdict(bounds),
        "table_failures": outcome.table_failures,
        "drift": result.drift,
        "labels_without_file": orphans,
        "files": files,
        "placements": result.placements,
        "data_docs": f"{DATA_DOCS_DIR}/index.html",
        "great_expectations": outcome.result,
    }
    write_text_atomic(work / REPORT_STAGING / REPORT_JSON, json.dumps(body, indent=1))
