"""Opening a production line: its entry in the platform params file, its workspace, and
the workspace's own params.

The platform params file (the argument, else ``$EXDD_PARAMS``, else ./params.yaml) lists
the lines (``lines:``) and the platform-wide settings (access control, serving); each
line's workspace holds its own params.yaml with the line's detector, gate, publish and
review settings. The nightly run, the dashboard, the CLI and the server all open a line
here, so they read the same files the same way.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from exdd.config import PARAMS_FILE, LineConfig, Params, load_params, params_file
from exdd.errors import ConfigError
from exdd.storage import is_s3_uri



@dataclass(frozen=True)
class Line:
    """One opened line: its entry in the platform params, its workspace folder and the
    workspace's params (publishing under the line's name)."""

    config: LineConfig
    workspace: Path
    params: Params


def platform_file(source: str | os.PathLike[str] | None = None) -> Path:
    """The params file listing the lines: the argument, else $EXDD_PARAMS, else ./params.yaml."""
    return params_file(source).resolve()


def line_config(platform: Params, name: str) -> LineConfig:
    """The configured line called ``name``."""
    for line in platform.lines:
        if line.name == name:
            return line
    known = ", ".join(line.name for line in platform.lines) or "none"
    raise ConfigError(f"params: no line named {name!r} (configured: {known})")


def open_line(params_file: str | os.PathLike[str] | None, name: str) -> Line:
    """The line ``name`` of the platform params file (see :func:`platform_file`); a
    workspace without its own params.yaml is an error, never a fall-back to defaults."""
    source = platform_file(params_file)
    config = line_config(load_params(source), name)
    workspace = config.workspace_path(source.parent)
    params = workspace_params(workspace, line=name)
    params.publish.line = config.name
    return Line(config, workspace, params)


def workspace_params(workspace: Path, given: str | os.PathLike[str] | None = None,
                     line: str | None = None) -> Params:
    """A workspace's own params (``given``, a file named on the command line, instead). A
    folder without a params.yaml is not a line workspace: an error naming it, never
    exdd's defaults."""
    if given:
        return load_params(given)
    own = Path(workspace) / PARAMS_FILE
    if not own.is_file():
        whose = f"line {line!r} has no workspace there" if line else "not a line workspace"
        raise ConfigError(f"{workspace}: {whose} (no {PARAMS_FILE}); create it with "
                          f"`exdd workspace init {workspace}`")
    return load_params(own)


def inbox_uri(config: LineConfig, workspace: Path) -> str:
    """The line's inbox: its ``s3://`` URI as configured, else its folder in the workspace."""
    return config.inbox if is_s3_uri(config.inbox) else str(workspace / config.inbox)
