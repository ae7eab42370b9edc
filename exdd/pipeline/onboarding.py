"""A new production line from a labelled data set: ``exdd line add`` and ``exdd line feed``.

``add_line`` lists the line in the platform params file (created from exdd's defaults when
absent), creates its workspace (git + DVC + MLflow, ``exdd.line.workspace``), makes the data
set's test split the line's benchmark (KSDD2 layout, DVC-tracked) and delivers its train
split to the line's inbox with the labels sidecar, as a line would: all at once, or as N
nightly batches, the later ones staged in ``data/staged/<k>/`` of the workspace until
``feed_line`` moves the next one into the inbox.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image

from exdd.config import LineConfig, load_params, params_from_dict
from exdd.data.readers import Sample, load_samples, mask_is_nonempty, open_image
from exdd.errors import ConfigError, DataError
from exdd.fsutil import write_text_atomic
from exdd.storage import is_s3_uri
from exdd.line.workspace import (
    LINES_KEY,
    default_params_text,
    drop_into_inbox,
    init_workspace,
    line_params_text,
)

STAGED_DIR = "data/staged"
WORKSPACES_DIR = "runs"  # default parent of a new line's workspace, beside the params file
REMOTE_SUFFIX = "-remote"  # default DVC remote: a folder beside the workspace


@dataclass(frozen=True)
class LineSetup:
    """What ``add_line`` made: the line, its files, and how its data was split up."""

    line: LineConfig
    params_file: Path
    workspace: Path
    n_benchmark: int
    n_skipped: int  # test defects without a defect pixel in their mask: no benchmark use
    batches: list[int]  # train images per nightly batch; the first is in the inbox


def _platform_text(params_file: Path) -> str:
    """The platform params file's text, or exdd's defaults without their lines."""
    if params_file.is_file():
        return params_file.read_text()
    return default_params_text()


def _with_line(text: str, entry: dict[str, Any], source: str) -> str:
    """``text`` with ``entry`` appended to its ``lines:`` list, the rest (comments too)
    kept as written; a list it cannot extend in place is written anew."""
    raw = yaml.safe_load(text) or {}
    lines = list(raw.get(LINES_KEY) or [])
    if any(line.get("name") == entry["name"] for line in lines):
        raise ConfigError(f"{source}: a line named {entry['name']!r} exists already")
    new = _appended(text, entry) if lines else None
    if new is None or (yaml.safe_load(new) or {}).get(LINES_KEY) != [*lines, entry]:
        body = line_params_text(text).rstrip("\n")
        listed = yaml.safe_dump({LINES_KEY: [*lines, entry]}, sort_keys=False)
        new = (body + "\n" if body else "") + listed
    params_from_dict(yaml.safe_load(new), source)  # refuse anything the platform cannot load
    return new


def _appended(text: str, entry: dict[str, Any]) -> str | None:
    """``entry`` as one more item at the end of the block-style ``lines:`` list."""
    rows = text.splitlines(keepends=True)
    start = next((i for i, r in enumerate(rows) if r.split(":", 1)[0] == LINES_KEY), None)
    if start is None:
        return None
    end = next((i for i in range(start + 1, len(rows))
                if rows[i][:1] not in (" ", "\t", "-", "#", "\n", "\r", "")), len(rows))
    items = [r for r in rows[start + 1:end] if r.lstrip().startswith("- ")]
    if not items:
        return None
    indent = items[0][: len(items[0]) - len(items[0].lstrip())]
    item = "".join(indent + r for r in yaml.safe_dump([entry], sort_keys=False).splitlines(True))
    block = rows[start:end]
    if block and not block[-1].endswith("\n"):
        block[-1] += "\n"
    return "".join(rows[:start] + block + [item] + rows[end:])


def write_benchmark(samples: list[Sample], folder: Path, threshold: int) -> int:
    """The test split as KSDD2 layout (``test/NNNNN.<ext>`` + ``NNNNN_GT.png``; normal
    images without a mask get an empty one); defects whose mask is empty are skipped
    (the benchmark could not tell them from normals). Returns how many were skipped."""
    out = folder / "test"
    out.mkdir(parents=True)
    skipped = 0
    for i, s in enumerate(samples):
        if s.label and (s.mask is None or not mask_is_nonempty(s.mask, threshold)):
            skipped += 1
            continue
        stem = out / f"{i:05d}"
        shutil.copyfile(s.image, stem.with_suffix(s.image.suffix.lower()))
        mask = stem.with_name(f"{stem.name}_GT.png")
        if s.mask is not None:
            open_image(s.mask).convert("L").save(mask)
        else:
            width, height = open_image(s.image).size
            Image.fromarray(np.zeros((height, width), np.uint8)).save(mask)
    return skipped


def _workspace_entry(workspace: Path, base: Path) -> str:
    """How the params file names the workspace: relative to its folder when inside it."""
    return (os.path.relpath(workspace, base) if workspace.is_relative_to(base)
            else str(workspace))


def add_line(name: str, data: str | Path, params_file: str | Path,
             workspace: str | Path | None = None, batches: int = 1,
             remote: str | None = None) -> LineSetup:
    """Make the labelled data set ``data`` (KSDD2 folder or manifest CSV) a line."""
    params_file = Path(params_file).resolve()
    base = params_file.parent
    root = Path(workspace).resolve() if workspace else base / WORKSPACES_DIR / name
    entry = {"name": name, "workspace": _workspace_entry(root, base)}
    text = _with_line(_platform_text(params_file), entry, str(params_file))
    line = LineConfig(**entry)
    if batches < 1:
        raise ConfigError(f"--batches must be at least 1, not {batches}")
    train, test = load_samples(data, "train"), load_samples(data, "test")
    if len(train) < batches:
        raise DataError(f"{data}: {len(train)} train image(s) cannot make {batches} batches")
    if root.exists() and any(root.iterdir()):
        raise ConfigError(f"{root}: folder exists and is not empty; not a new line workspace")
    if not params_file.is_file():  # the workspace's own params start as the platform's
        write_text_atomic(params_file, line_params_text(text))
    ws = init_workspace(root, params_file, remote or f"{root}{REMOTE_SUFFIX}", demo=False)
    params = load_params(ws.path("params.yaml"))
    skipped = write_benchmark(test, ws.path(params.gate.benchmark), params.data.mask_threshold)
    dvc_file = ws.add(params.gate.benchmark)
    ws.commit(f"exdd line add {name}: benchmark = test split of {data}",
              [dvc_file, str(Path(params.gate.benchmark).parent / ".gitignore")])
    parts = [train[k::batches] for k in range(batches)]
    drop_into_inbox(parts[0], line.workspace_path(base) / line.inbox, params.intake)
    for k, part in enumerate(parts[1:], start=2):
        drop_into_inbox(part, ws.path(STAGED_DIR) / f"{k:03d}", params.intake)
    write_text_atomic(params_file, text)  # last: the line is listed once it is complete
    return LineSetup(line, params_file, ws.root, len(test) - skipped, skipped,
                     [len(p) for p in parts])


def _merge_sidecar(inbox: Path, staged: Path, labels_file: str) -> None:
    """The staged batch's label rows into the inbox sidecar (rows already there kept)."""
    rows: dict[str, dict[str, str]] = {}
    fields: list[str] = []
    for path in (inbox / labels_file, staged / labels_file):
        if path.is_file():
            reader = csv.DictReader(io.StringIO(path.read_text()))
            fields += [f for f in reader.fieldnames or [] if f not in fields]
            for row in reader:
                rows.setdefault(row["image"], row)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n", restval="")
    writer.writeheader()
    writer.writerows(rows.values())
    write_text_atomic(inbox / labels_file, out.getvalue())


def feed_line(params_file: str | Path | None, name: str) -> tuple[Path, int, int]:
    """Move the next staged batch into the line's inbox; returns (inbox, images moved,
    batches still staged). Labels go first, so a crash never leaves an unlabelled image."""
    from exdd.pipeline.nightly import open_run

    run = open_run(params_file, name, "line-feed")
    if is_s3_uri(run.line.inbox):
        raise ConfigError(f"line {name}: inbox {run.line.inbox} is on S3; feed writes local "
                          "inbox folders only")
    staged = sorted(p for p in run.path(STAGED_DIR).glob("*") if p.is_dir())
    if not staged:
        raise DataError(f"{run.path(STAGED_DIR)}: no staged batch left for line {name}")
    labels_file = run.params.intake.labels_file
    batch, inbox = staged[0], run.path(run.line.inbox)
    inbox.mkdir(parents=True, exist_ok=True)
    _merge_sidecar(inbox, batch, labels_file)
    files = [p for p in sorted(batch.iterdir()) if p.name != labels_file]
    for path in files:
        os.replace(path, inbox / path.name)
    n_images = sum(1 for _ in csv.DictReader(io.StringIO((batch / labels_file).read_text())))
    shutil.rmtree(batch)
    return inbox, n_images, len(staged) - 1

