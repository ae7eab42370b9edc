"""Provenance of synthetic samples: one JSON line per sample, enough to trace and regenerate it.

Each record names the backend, model, prompt, seed, the source image and mask (with their
sha256, so a changed source is noticed) and the backend's parameters. ``provenance.jsonl``
sits at the root of a synthetic data set, beside ``train/``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from exdd.errors import DataError

PROVENANCE_FILE = "provenance.jsonl"


@dataclass(frozen=True)
class Provenance:
    """Where one synthetic sample came from; paths of outputs are relative to the data set."""

    image: str
    mask: str
    backend: str
    seed: int
    source_image: str
    source_image_sha256: str
    source_mask: str | None = None
    source_mask_sha256: str | None = None
    model_id: str | None = None
    prompt: str | None = None
    negative_prompt: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    detail: dict[str, Any] = field(default_factory=dict)


def dumps(records: list[Provenance]) -> str:
    """JSON lines, keys sorted so equal records give equal bytes."""
    return "".join(json.dumps(asdict(r), sort_keys=True) + "\n" for r in records)


def read_provenance(dataset: Path) -> list[Provenance]:
    """All records of a synthetic data set (its folder or the .jsonl file itself)."""
    path = Path(dataset)
    if path.is_dir():
        path = path / PROVENANCE_FILE
    if not path.is_file():
        raise DataError(f"{path}: provenance file not found")
    records = []
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(Provenance(**json.loads(line)))
        except (json.JSONDecodeError, TypeError) as err:
            raise DataError(f"{path}:{lineno}: bad provenance record ({err})") from None
    return records
