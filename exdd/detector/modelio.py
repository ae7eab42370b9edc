"""Model directories: written atomically, every file's sha256 recorded and verified on load.

A model directory holds the content that defines the model (``CONTENT_FILES``) and a
``checksums.json`` over them; its sha256 is the model hash that versions, tags and the
registry refer to. ``metrics.json`` and ``gate.json`` are annotations written later, kept
out of the hash so evaluating a model does not change its identity.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from exdd import __version__
from exdd.config import DataConfig, ModelConfig
from exdd.errors import ModelError
from exdd.fsutil import atomic_dir, sha256_file, write_text_atomic

if TYPE_CHECKING:
    from exdd.detector.model import ExDD

FORMAT_VERSION = 1
META = "model.json"
CHECKSUMS = "checksums.json"
ARRAYS = ("projection", "bank_normal", "bank_defect")
CONTENT_FILES = (META,) + tuple(f"{a}.npy" for a in ARRAYS)


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def _canonical(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True) + "\n"


def save_model(model: ExDD, directory: str | Path) -> str:
    """Write ``model`` to ``directory`` atomically (replacing it whole); return the model hash."""
    if not model.is_fitted:
        raise ModelError("cannot save a model that is not fitted")
    meta = {
        "format_version": FORMAT_VERSION,
        "exdd_version": __version__,
        "backbone": model.model.backbone,
        "model": model.model.model_dump(),
        "data": model.data.model_dump(),
        "grid": list(model.grid_),
        "tau_normal": model.tau_normal_,
        "tau_defect": model.tau_defect_,
        "bank_sizes": {"normal": len(model.bank_normal_), "defect": len(model.bank_defect_)},
        "data_hashes": model.data_hashes_,
    }
    with atomic_dir(directory) as staging:
        (staging / META).write_text(_canonical(meta))
        for name in ARRAYS:
            (staging / f"{name}.npy").write_bytes(_npy_bytes(getattr(model, f"{name}_")))
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


def load_model(directory: str | Path) -> ExDD:
    """Load and verify a model directory written by ``save_model``."""
    from exdd.detector.model import ExDD

    d = Path(directory)
    verify(d)
    meta = json.loads((d / META).read_text())
    if meta.get("format_version") != FORMAT_VERSION:
        raise ModelError(f"{d / META}: unsupported format_version {meta.get('format_version')}")
    model = ExDD(ModelConfig(**meta["model"]), DataConfig(**meta["data"]))
    for name in ARRAYS:
        setattr(model, f"{name}_", np.load(d / f"{name}.npy", allow_pickle=False))
    model.grid_ = tuple(meta["grid"])
    model.tau_normal_ = float(meta["tau_normal"])
    model.tau_defect_ = float(meta["tau_defect"])
    model.data_hashes_ = dict(meta["data_hashes"])
    return model


def write_annotation(directory: str | Path, name: str, payload: dict[str, Any]) -> Path:
    """Write ``metrics.json`` / ``gate.json`` beside the model, atomically."""
    path = Path(directory) / name
    write_text_atomic(path, _canonical(payload))
    return path
