"""``exdd data ksdd2`` and ``exdd data demo``: put a KSDD2-layout data set on disk."""

from __future__ import annotations

import argparse
from pathlib import Path

from exdd.config import load_params
from exdd.data.readers import SPLITS, load_samples
from exdd.data.ksdd2 import (
    ARCHIVE_SHA256,
    DOWNLOAD_TIMEOUT_S,
    PUBLISHER_URL,
    download_ksdd2,
    refuse_foreign,
)

NO_CHECKSUM = "none"


def _ksdd2(args: argparse.Namespace) -> int:
    sha256 = None if args.sha256.lower() == NO_CHECKSUM else args.sha256
    out = download_ksdd2(Path(args.out), args.url, sha256=sha256, timeout=args.timeout)
    print(f"KolektorSDD2 ready in {out}: {_summary(out)}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from exdd.data.demo import make_demo

    out = Path(args.out)
    refuse_foreign(out)
    params = load_params(args.params)
    make_demo(out, params.demo, seed=args.seed, defects=params.synth.procedural)
    seed = params.demo.seed if args.seed is None else args.seed
    print(f"demo data set (seed {seed}) written to {out}: {_summary(out)}")
    return 0


def _summary(root: Path) -> str:
    """e.g. ``train 52 images (12 defective), test 40 images (20 defective)``."""
    samples = load_samples(root)
    parts = []
    for split in SPLITS:
        labels = [s.label for s in samples if s.split == split]
        parts.append(f"{split} {len(labels)} images ({sum(labels)} defective)")
    return ", ".join(parts)


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``data ksdd2`` and ``data demo``."""
    data = sub.add_parser("data", help="download or generate a KSDD2-layout data set")
    kinds = data.add_subparsers(dest="data_command", required=True)

    ksdd2 = kinds.add_parser("ksdd2", help="download KolektorSDD2 from its publisher")
    ksdd2.add_argument("--out", required=True, help="folder to create (train/ and test/)")
    ksdd2.add_argument("--url", default=PUBLISHER_URL, help="archive URL (default: publisher)")
    ksdd2.add_argument("--sha256", default=ARCHIVE_SHA256,
                       help=f"expected sha256 of the zip; '{NO_CHECKSUM}' skips the check")
    ksdd2.add_argument("--timeout", type=float, default=DOWNLOAD_TIMEOUT_S,
                       help="seconds a network read may stall before the transfer resumes")
    ksdd2.set_defaults(func=_ksdd2)

    demo = kinds.add_parser("demo", help="generate the deterministic demo data set")
    demo.add_argument("--out", required=True, help="folder to create (train/ and test/)")
    demo.add_argument("--seed", type=int, help="overrides demo.seed of the config")
    demo.add_argument("--params", help="params file to use (its demo and synth.procedural "
                                       "sections)")
    demo.set_defaults(func=_demo)
