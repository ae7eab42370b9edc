"""A tiny production line and an Airflow home for the DAG tests, built with the real tools.

``make_nightly_line`` creates the MLOps tests' tiny line workspace (git + DVC, local DVC
remote, a demo night in the inbox, the benchmark) with a gate every candidate passes, and
the params file that lists it; ``airflow_env`` is the environment every ``airflow``
command of a test runs in (its own home and metadata database, this repository's ``dags/``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from mlops_helpers import make_line

from exdd.config import Params, load_params

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# The tiny line of the MLOps tests with a gate every candidate passes; tests close it.
OPEN_GATE: dict[str, Any] = {"gate": {"min_image_auroc": 0.0, "min_pixel_auroc": 0.0,
                                      "regression_tolerance": 1.0, "overlay_images": 2},
                             "synth": {"count": 3}, "publish": {"probe_images": 2}}


@dataclass(frozen=True)
class Line:
    name: str
    root: Path
    workspace: Path
    params_file: Path  # lists the line: what the DAG file and ``exdd nightly`` read

    @property
    def dag_id(self) -> str:
        return f"exdd_nightly_{self.name}"

    def set_gate(self, **values: float) -> None:
        """Change the line's own gate settings (its workspace params.yaml)."""
        path = self.workspace / "params.yaml"
        raw = yaml.safe_load(path.read_text())
        raw["gate"].update(values)
        path.write_text(yaml.safe_dump(raw, sort_keys=False))

    def params(self) -> Params:
        params = load_params(self.workspace / "params.yaml")
        params.publish.line = self.name
        return params


def make_nightly_line(root: Path, name: str, **line: Any) -> Line:
    """A tiny line workspace (demo night in its inbox, benchmark) and the params file that
    lists it; ``line`` overrides LineConfig fields."""
    workspace, _ = make_line(root, str(root / "remote"), OPEN_GATE)
    params_file = root / "params.yaml"
    entry = {"name": name, "workspace": workspace.name, "schedule": None, "retries": 1,
             "retry_delay_s": 1, **line}
    raw = yaml.safe_load((workspace / "params.yaml").read_text())
    params_file.write_text(yaml.safe_dump(dict(raw, lines=[entry]), sort_keys=False))
    return Line(name, root, workspace, params_file)


def airflow_env(home: Path, params_file: Path, **extra: str) -> dict[str, str]:
    """Environment of a test's ``airflow`` commands; ``extra`` adds AIRFLOW__* settings."""
    env = dict(os.environ)
    env.update({
        "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        "AIRFLOW_HOME": str(home),
        "EXDD_PARAMS": str(params_file),
        "EXDD_USER": "pytest",
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
        **extra,
    })
    return env


def airflow(env: dict[str, str], *args: str, timeout: float = 600) -> str:
    """Run one ``airflow`` command; a failure shows the end of its output."""
    proc = subprocess.run([str(BIN / "airflow"), *args], env=env, capture_output=True,
                          text=True, timeout=timeout)
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        lines = out.splitlines()
        first = next((i for i, ln in enumerate(lines) if "Traceback" in ln or "[error" in ln), 0)
        raise AssertionError(f"airflow {' '.join(args)} exited {proc.returncode}:\n"
                             + "\n".join(lines[first:first + 60]) + "\n...\n"
                             + "\n".join(lines[-15:]))
    return out


def setup_airflow(env: dict[str, str], line: Line) -> None:
    """What every Airflow home needs before a run: schema, the line's pool, the DAGs."""
    Path(env["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
    airflow(env, "db", "migrate")
    airflow(env, "pools", "set", f"exdd_{line.name}_repo", "1", "git/DVC steps of the line")
    airflow(env, "dags", "reserialize")
