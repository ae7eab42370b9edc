"""``exdd`` command line: one sub-command module per concept, each with ``register``.

Every ``ExddError`` (and any other file-system error: disk full, read-only) becomes one
line on stderr naming the file and the problem, exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from exdd import __version__, runtime
from exdd.errors import ExddError

# Each module defines ``register(subparsers)``; its sub-commands set ``func(args) -> int``.
COMMAND_MODULES = (
    "exdd.cli.detector",
    "exdd.cli.data",
    "exdd.cli.synth",
    "exdd.cli.intake",
    "exdd.cli.mlops",
    "exdd.cli.pipeline",
    "exdd.cli.serve",
    "exdd.cli.line",
    "exdd.cli.params",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="exdd", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"exdd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    runtime.configure()  # before any command imports torch or faiss
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ExddError as err:
        print(f"exdd {args.command}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a write the library does not route through exdd.fsutil
        where = f"{err.filename}: " if err.filename else ""
        print(f"exdd {args.command}: error: {where}{err.strerror or err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
