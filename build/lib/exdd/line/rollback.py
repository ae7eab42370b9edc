"""Rollback: make an earlier published version the champion again, exactly as published.

The version's ``.dvc`` file comes back from its git tag, its files from the DVC cache (or
the remote when the cache lacks them), every file's sha256 is checked and must give the
tagged model hash; then the change is committed, the line is pinned to the version
(``exdd.line.champion``: the next night's gate must not replace it), the MLflow alias
``champion`` moves to the version, and who / when / why goes to the append-only audit log.
As with publishing, a failure leaves the current champion (and pin) in place everywhere.
Rolling back to the current champion changes nothing, except pinning an unpinned line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from exdd.config import Params
from exdd.errors import ConfigError, ExddError, ModelError
from exdd.fsutil import write_text_atomic
from exdd.detector.modelio import model_hash, verify
from exdd.line.audit import append_audit, utc_now
from exdd.line.champion import Pin, read_pin, write_pin
from exdd.line.publish import PublishedModel, published_versions
from exdd.line.registry import CHAMPION, Registry
from exdd.line.workspace import Workspace

VERSION_RE = re.compile(r"v?(\d+)")


@dataclass(frozen=True)
class RolledBack(PublishedModel):
    """The version that is champion now; ``changed``: False when it already was."""

    changed: bool = True


def resolve(ws: Workspace, line: str, to: str) -> tuple[PublishedModel, dict[str, Any]]:
    """A published version named by its tag (``model-demo-v1``), ``v1`` or ``1``."""
    versions = published_versions(ws, line)
    number = VERSION_RE.fullmatch(to.strip())
    for record, info in versions:
        if record.tag == to or (number and record.version == int(number.group(1))):
            return record, info
    known = ", ".join(r.tag for r, _ in versions) or "none"
    raise ConfigError(f"{ws.root}: no published version {to!r} of line {line!r} "
                      f"(published: {known})")


def rollback(to: str, params: Params, repo: Path, reason: str, who: str) -> RolledBack:
    """Restore version ``to`` as the champion and pin the line to it; returns it."""
    if not reason.strip():
        raise ConfigError("a rollback needs a reason (--reason)")
    ws, cfg = Workspace(repo), params.publish
    record, info = resolve(ws, cfg.line, to)
    registry = Registry(params, ws.root)
    previous, pin = registry.alias(CHAMPION), read_pin(registry)
    new_pin = Pin(record.version, who, reason, utc_now())
    audit = {"who": who, "reason": reason, "tag": record.tag, "version": record.version,
             "model_hash": record.model_hash}
    if previous is not None and int(previous.version) == record.version:
        if pin is None or pin.version != record.version:
            write_pin(registry, new_pin)
            append_audit(ws.root, params, {"event": "pin", **audit})
        return RolledBack(record.tag, record.version, record.model_hash, changed=False)
    dvc_file = info["dvc_file"]
    text = ws.show(record.tag, dvc_file)
    if text is None:
        raise ModelError(f"{record.tag}: tag holds no {dvc_file}")
    with ws.transaction([dvc_file], cfg.dvc_remote):
        write_text_atomic(ws.path(dvc_file), text)
        ws.restore(dvc_file, cfg.dvc_remote)
        restored = ws.path(dvc_file).with_suffix("")
        verify(restored)
        if model_hash(restored) != record.model_hash:
            raise ModelError(f"{restored}: restored files give model {model_hash(restored)[:12]}, "
                             f"{record.tag} published {record.model_hash[:12]}")
        commit = ws.commit(f"rollback {cfg.line} to {record.tag}: {reason} (by {who})", [dvc_file])
        write_pin(registry, new_pin)  # before the alias: a pinned line never loses its pin
        try:
            registry.set_alias(CHAMPION, record.version)
        except ExddError:
            write_pin(registry, pin)
            raise
    append_audit(ws.root, params, {
        "event": "rollback", **audit, "commit": commit, "pinned": True,
        "from_version": int(previous.version) if previous is not None else None,
    })
    return RolledBack(record.tag, record.version, record.model_hash)
