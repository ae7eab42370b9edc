"""Model directories: written atomically, every file's sha256 recorded and verified on load.

A model directory holds the content that defines the model (``CONTENT_FILES``) and a
``checksums.json`` over them; its sha256 is the model hash that versions, tags and the
registry refer to. ``metrics.json`` and ``gate.json`` are annotations written later, kept
out of the hash so evaluating a model does not change its identity. ``model.json`` keeps
the model settings flat (their keys before the settings had sections), so the files and
the hash of a model depend on its content only.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from exdd.detector.settings import DataConfig, from_flat, to_flat
from exdd.detector.state import FittedState
from exdd.errors import ConfigError, ModelError
from exdd.fsutil import atomic_dir, sha256_file, write_text_atomic

FORMAT_VERSION = 1
META = "model.json"
CHECKSUMS = "checksums.json"
ARRAYS = ("projection", "bank_normal", "bank_defect")
CONTENT_FILES = (META,) + tuple(f"{a}.npy" for a in ARRAYS)


def npy_bytes(array: np.ndarray) -> bytes:
    """``array`` as ``.npy`` file content (no pickles: safe to load from any source)."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def _canonical(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True) + "\n"


def save_model(state: FittedState, directory: str | Path) -> str:
    """Write ``state`` to ``directory`` atomically (replacing it whole); return the model hash."""
    meta = {
        "format_version": FORMAT_VERSION,
        "exdd_version": state.exdd_version,
        "backbone": state.model.features.backbone,
        "model": to_flat(state.model),
        "data": state.data.model_dump(),
        "grid": list(state.grid),
        "tau_normal": state.tau_normal,
        "tau_defect": state.tau_defect,
        "bank_sizes": {"normal": len(state.bank_normal), "defect": len(state.bank_defect)},
        "data_hashes": state.data_hashes,
        **({} if state.selection is None else {"selection": state.selection}),
    }
    with atomic_dir(directory) as staging:
        (staging / META).write_text(_canonical(meta))
        for name in ARRAYS:
            (staging / f"{name}.npy").write_bytes(npy_bytes(getattr(state, name)))
        sums = {name: sha256_file(staging / name) for name in CONTENT_FILES}
        (staging / CHECKSUMS).write_text(_canonical(sums))
    return model_hash(directory)


def model_hash(directory: str | Path) -> str:
    """sha256 of ``checksums.json``: one value naming exactly this model content."""
    path = Path(directory) / CHECKSUMS
    if not path.is_file():
        raise ModelError(f"{directory}: not a model directory (no {CHECKSUMS})")
    return hashlib.sha256(path.read_bytes()).hexdigest()


def verify(directory: str | Path) -> dict[str, str]:
    """Check every content file against ``checksums.json``; ModelError names the bad one."""
    d = Path(directory)
    if not d.is_dir():
        raise ModelError(f"{d}: model directory not found")
    try:
        sums = json.loads((d / CHECKSUMS).read_text())
    except FileNotFoundError:
        raise ModelError(f"{d}: not a model directory (no {CHECKSUMS})") from None
    except json.JSONDecodeError as err:
        raise ModelError(f"{d / CHECKSUMS}: corrupt ({err})") from None
    for name in CONTENT_FILES:
        path = d / name
        if not path.is_file():
            raise ModelError(f"{path}: missing from model directory")
        if sums.get(name) != sha256_file(path):
            raise ModelError(f"{path}: sha256 does not match checksums.json (tampered or corrupt)")
    return sums


def load_model(directory: str | Path) -> FittedState:
    """Load and verify a model directory written by ``save_model``."""
    d = Path(directory)
    verify(d)
    meta = json.loads((d / META).read_text())
    if meta.get("format_version") != FORMAT_VERSION:
        raise ModelError(f"{d / META}: unsupported format_version {meta.get('format_version')}")
    try:
        model = from_flat(meta["model"])
    except ConfigError as err:
        raise ModelError(f"{d / META}: {err}") from None
    arrays = {name: np.load(d / f"{name}.npy", allow_pickle=False) for name in ARRAYS}
    return FittedState(
        model=model, data=DataConfig(**meta["data"]), grid=tuple(meta["grid"]),
        tau_normal=float(meta["tau_normal"]), tau_defect=float(meta["tau_defect"]),
        data_hashes=dict(meta["data_hashes"]), selection=meta.get("selection"),
        exdd_version=meta["exdd_version"], **arrays)


def write_annotation(directory: str | Path, name: str, payload: dict[str, Any]) -> Path:
    """Write ``metrics.json`` / ``gate.json`` beside the model, atomically."""
    path = Path(directory) / name
    write_text_atomic(path, _canonical(payload))
    return path
