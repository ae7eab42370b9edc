"""What several ``exdd`` sub-commands share: their common arguments, run stamps, image
inputs and the report of unreadable images. Command modules import this, never each other."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timezone
from pathlib import Path

from exdd.data.readers import IMAGE_SUFFIXES
from exdd.errors import DataError


def run_stamp() -> str:
    """Now, as the time part of a generated run id (``<kind>__<stamp>``)."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S+00:00")


def params_argument(parser: argparse.ArgumentParser) -> None:
    """``--params FILE``: the platform params file, the one listing the lines."""
    parser.add_argument("--params", type=Path,
                        help="params file listing the lines (default: $EXDD_PARAMS, else "
                             "./params.yaml)")


def line_arguments(parser: argparse.ArgumentParser) -> None:
    """``--line NAME`` and ``--params FILE``."""
    parser.add_argument("--line", required=True, help="line name (params `lines:`)")
    params_argument(parser)


def collect_images(inputs: list[str]) -> list[Path]:
    paths: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES
                           and not f.stem.endswith("_GT"))
            if not found:
                raise DataError(f"{p}: folder holds no images")
            paths.extend(found)
        elif p.is_file():
            paths.append(p)
        else:
            raise DataError(f"{p}: no such image or folder")
    return paths


def report_unreadable(failed: list) -> int:
    """List the images a batch could not read, one line each: exit 1 when there were any."""
    for path, why in failed:
        print(f"not scored: {path}: {why}", file=sys.stderr)
    if failed:
        print(f"{len(failed)} image(s) could not be read; see the error column of "
              "scores.csv", file=sys.stderr)
    return 1 if failed else 0
