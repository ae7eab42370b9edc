"""``exdd params dump``: every setting at its default, as params.yaml text.

The one source of the defaults is ``exdd.config.Params``; the repository's params.yaml is
this output (plus its ``lines``), which tests/unit/test_config.py checks.
"""

from __future__ import annotations

import argparse


def _dump(args: argparse.Namespace) -> int:
    from exdd.config import Params, params_yaml

    print(params_yaml(Params()), end="")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``params dump``."""
    params = sub.add_parser("params", help="the settings of params.yaml")
    verbs = params.add_subparsers(dest="params_command", required=True)
    dump = verbs.add_parser("dump", help="print every setting at its default, as YAML")
    dump.set_defaults(func=_dump)
