"""The line's audit log: who published, rolled back, pinned or unpinned which model, when
and why, as append-only JSON lines in the workspace (``publish.audit_log``).

Publishing, rollback and the champion's pin write it; the review dashboard reads it.
"""

from __future__ import annotations

import getpass
import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from exdd.config import Params
from exdd.errors import DataError
from exdd.fsutil import FILE_MODE


def utc_now() -> str:
    """The time stamp of audit entries and of the records they describe."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def current_user() -> str:
    """Who is acting: $EXDD_USER (set by schedulers), else the login name."""
    try:
        return os.environ.get("EXDD_USER") or getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def audit_path(workspace: Path, params: Params) -> Path:
    return Path(workspace) / params.publish.audit_log


def append_audit(workspace: Path, params: Params, record: dict[str, Any]) -> None:
    """Append one JSON line (never rewritten, fsynced), stamped with the time and line."""
    path = audit_path(workspace, params)
    path.parent.mkdir(parents=True, exist_ok=True)
    entry = {"at": utc_now(), "line": params.publish.line, **record}
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, FILE_MODE)
    try:
        os.write(fd, (json.dumps(entry, sort_keys=True) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def read_audit(workspace: Path, params: Params) -> list[dict[str, Any]]:
    """Every entry of the log, newest first (none when nothing was logged yet)."""
    path = audit_path(workspace, params)
    if not path.is_file():
        return []
    entries = []
    for lineno, text in enumerate(path.read_text().splitlines(), start=1):
        if text.strip():
            try:
                entries.append(json.loads(text))
            except json.JSONDecodeError as err:
                raise DataError(f"{path}:{lineno}: not a JSON line ({err})") from None
    return entries[::-1]
