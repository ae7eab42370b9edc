"""The intent journal: how an intake survives a crash at any point and finishes on re-run.

Protocol (work folder ``DIR/.intake/``, on the data set's file system):

1. *Plan*: every inbox file is copied (fsynced) into the work folder, validated, and every
   output (reason JSONs, the new manifest, the report) is written there too. Nothing in
   the data set or the inbox has changed yet; a crash here leaves the old state and the
   next run throws the work folder away and starts over.
2. *Commit*: ``journal.json`` is written atomically. It lists every move
   (staged file -> data-set path, its sha256, the inbox file it came from). A move
   without a staged file only checks that its destination holds those bytes: a label
   update's image, which is already in the data set.
3. *Apply*: each staged file is renamed into place (atomic, same file system; a move
   already done is recognised by its destination's hash); the manifest goes last, so it
   never names a missing file. Directories are fsynced, then the report is copied.
4. *Drain*: only now, each inbox file whose stored copy re-hashes correctly is removed
   (and only if it is still the version that was fetched).
5. *Done*: the journal, then the work folder, is removed.

A crash after step 2 leaves the journal; the next run sees it and redoes steps 3-5, all
idempotent, so it reaches exactly the state an uninterrupted run would have.

Test hook: with ``EXDD_INTAKE_KILL_AT=N`` set, the process sends itself SIGKILL just
before step N of apply/drain (1-based, counting every move, the report copy, every inbox
removal and the final clean-up). Tests use it to crash at a chosen point; it has no
other effect.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from exdd.errors import DataError
from exdd.fsutil import atomic_dir, sha256_file, write_bytes_atomic, write_text_atomic
from exdd.line.intake.inbox import Inbox, InboxFile

JOURNAL_NAME = "journal.json"
REPORT_STAGING = "report"
KILL_ENV = "EXDD_INTAKE_KILL_AT"


@dataclass(frozen=True)
class Move:
    """Put ``staged`` (relative to the work folder) at ``dest`` (relative to the data set);
    ``staged`` None: the inbox file is already there (a relabelled data-set image)."""

    staged: str | None
    dest: str
    sha256: str
    key: str | None = None  # the inbox file it came from; None for a generated file
    size: int | None = None
    version: str | None = None


@dataclass
class Journal:
    batch: str
    inbox: str
    moves: list[Move]
    report_dir: str  # absolute: a re-run may start from another working directory
    result: dict[str, Any] = field(default_factory=dict)

    def save(self, work: Path) -> None:
        write_text_atomic(work / JOURNAL_NAME, json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, work: Path) -> "Journal | None":
        path = work / JOURNAL_NAME
        if not path.is_file():
            return None
        try:
            raw = json.loads(path.read_text())
            return cls(**{**raw, "moves": [Move(**m) for m in raw["moves"]]})
        except (ValueError, TypeError, KeyError) as err:
            raise DataError(f"{path}: unreadable intake journal ({err})") from None


class _KillPoints:
    """Counts apply/drain steps; SIGKILLs this process at step $EXDD_INTAKE_KILL_AT."""

    def __init__(self) -> None:
        raw = os.environ.get(KILL_ENV)
        self.target = int(raw) if raw else None
        self.step = 0

    def __call__(self) -> None:
        self.step += 1
        if self.step == self.target:
            os.kill(os.getpid(), signal.SIGKILL)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _place(move: Move, work: Path, dataset: Path) -> None:
    dest = dataset / move.dest
    staged = work / move.staged if move.staged is not None else None
    if staged is not None and staged.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged, dest)
    elif not dest.is_file() or sha256_file(dest) != move.sha256:
        raise DataError(f"{dest}: neither staged nor in place with sha256 {move.sha256[:12]}; "
                        f"the intake journal in {work} does not match the data set")


def _copy_report(src: Path, dest: Path) -> None:
    """Each top-level entry replaced atomically; other files in ``dest`` are left alone."""
    dest.mkdir(parents=True, exist_ok=True)
    for entry in sorted(src.iterdir()):
        if entry.is_dir():
            with atomic_dir(dest / entry.name) as staging:
                shutil.copytree(entry, staging, dirs_exist_ok=True)
        else:
            write_bytes_atomic(dest / entry.name, entry.read_bytes())


def apply(journal: Journal, work: Path, dataset: Path, inbox: Inbox) -> list[str]:
    """Steps 3-5 above; returns the inbox keys left in place because they changed."""
    kill = _KillPoints()
    for move in journal.moves:
        kill()
        _place(move, work, dataset)
    for folder in {(dataset / m.dest).parent for m in journal.moves} | {dataset}:
        _fsync_dir(folder)
    kill()
    _copy_report(work / REPORT_STAGING, Path(journal.report_dir))
    kept = []
    for move in journal.moves:
        if move.key is None:
            continue
        kill()
        if sha256_file(dataset / move.dest) != move.sha256:
            raise DataError(f"{dataset / move.dest}: stored copy of {move.key} does not match "
                            f"its sha256; the inbox file is kept")
        if not inbox.remove(InboxFile(move.key, move.size or 0, move.version or "")):
            kept.append(move.key)
    kill()
    (work / JOURNAL_NAME).unlink()
    shutil.rmtree(work)
    return kept
