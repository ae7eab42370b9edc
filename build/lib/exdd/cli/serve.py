"""``exdd serve --line NAME``: the line's champion as an HTTP scoring service.

The ``serve`` settings (address, limits, poll interval, auth) come from the params file
that lists the lines (``--params``, else $EXDD_PARAMS, else ./params.yaml); the registry the
service follows comes from the line's workspace params. Only the two params files are read:
the model itself is downloaded from the registry, so replicas need no workspace checkout.
"""

from __future__ import annotations

import argparse
import os

from exdd.errors import ConfigError

# Progress bars (predict's, MLflow's downloads) are noise in a service log; tqdm reads its
# switch when it is imported, so these are set before anything imports it.
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
QUIET_ENV = {"TQDM_DISABLE": "1", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}


def _serve(args: argparse.Namespace) -> int:
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    import logging

    import uvicorn

    from exdd.config import load_params
    from exdd.line.lines import open_line, platform_file
    from exdd.line.registry import Registry
    from exdd.serving.app import create_app

    cfg = load_params(platform_file(args.params)).serve
    line = open_line(args.params, args.line)
    token = None
    if cfg.auth == "token":
        token = os.environ.get(cfg.token_env, "")
        if not token:
            raise ConfigError(f"serve.auth is 'token' but ${cfg.token_env} is not set")
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    app = create_app(Registry(line.params, line.workspace), cfg, token)
    uvicorn.run(app, host=args.host or cfg.host, port=args.port or cfg.port,
                log_level="info", access_log=False)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add serve."""
    serve = sub.add_parser("serve", help="score images over HTTP with the line's champion, "
                                         "following the registry")
    serve.add_argument("--line", required=True, help="line name (params `lines:`)")
    serve.add_argument("--params", help="params file listing the lines (default: "
                                        "$EXDD_PARAMS, else ./params.yaml)")
    serve.add_argument("--host", help="bind address (default: serve.host, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default: serve.port)")
    serve.set_defaults(func=_serve)
