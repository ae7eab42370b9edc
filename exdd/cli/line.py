"""``exdd line add`` and ``exdd line feed``: a labelled data set becomes a line (``exdd.pipeline.onboarding``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from exdd.cli.common import params_argument


def _add(args: argparse.Namespace) -> int:
    from exdd.line.lines import platform_file
    from exdd.pipeline.onboarding import add_line

    done = add_line(args.name, args.data, platform_file(args.params), args.workspace,
                    args.batches, args.remote)
    name, n = done.line.name, len(done.batches)
    skipped = f" ({done.n_skipped} defect(s) with an empty mask left out)" if done.n_skipped else ""
    print(f"line {name} added to {done.params_file}")
    print(f"  workspace {done.workspace} (git + DVC + MLflow)")
    print(f"  benchmark: {done.n_benchmark} test image(s){skipped}")
    print(f"  inbox: {done.batches[0]} train image(s)"
          + (f", batch 1 of {n}; `exdd line feed {name}` delivers the next" if n > 1 else ""))
    print(f"next: exdd nightly --line {name} --params {done.params_file}")
    print(f"  or, with Airflow: airflow pools set {done.line.repo_pool} 1 'line {name}' and "
          f"EXDD_PARAMS={done.params_file} for the scheduler (DAG exdd_nightly_{name})")
    return 0


def _feed(args: argparse.Namespace) -> int:
    from exdd.pipeline.onboarding import feed_line

    inbox, moved, left = feed_line(args.params, args.name)
    print(f"{moved} image(s) of the next batch moved into {inbox}; {left} batch(es) still staged")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``line add`` and ``line feed``."""
    line = sub.add_parser("line", help="add a production line from a labelled data set")
    verbs = line.add_subparsers(dest="line_command", required=True)

    add = verbs.add_parser("add", help="list the line, create its workspace, benchmark and "
                                       "inbox from a KSDD2 folder or a manifest CSV")
    add.add_argument("name", metavar="NAME")
    add.add_argument("--from", dest="data", required=True, metavar="DATA",
                     help="KSDD2-layout folder or manifest CSV (its test split: the benchmark, "
                          "its train split: the inbox)")
    add.add_argument("--workspace", type=Path,
                     help="the line's workspace (default: runs/NAME beside the params file)")
    add.add_argument("--batches", type=int, default=1,
                     help="deliver the train split as N nightly batches (default 1)")
    add.add_argument("--remote", help="DVC remote URL (default: WORKSPACE-remote beside it)")
    params_argument(add)
    add.set_defaults(func=_add)

    feed = verbs.add_parser("feed", help="move the line's next staged batch into its inbox")
    feed.add_argument("name", metavar="NAME")
    params_argument(feed)
    feed.set_defaults(func=_feed)
