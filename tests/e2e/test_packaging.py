"""exdd as a user installs it: a plain wheel (not the source checkout) creates a workspace."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_a_plain_install_creates_a_line_workspace(tmp_path: Path) -> None:
    source, wheels, site = tmp_path / "source", tmp_path / "wheels", tmp_path / "site"
    source.mkdir()  # a copy: building writes build/ and *.egg-info beside the sources
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(ROOT / "exdd", source / "exdd",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels),
                    str(source)], check=True, capture_output=True)
    wheel = next(wheels.glob("exdd-*.whl"))
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, capture_output=True)
    env = {**os.environ, "PYTHONPATH": str(site)}
    where = subprocess.run([sys.executable, "-c", "import exdd; print(exdd.__file__)"],
                           cwd=tmp_path, env=env, check=True, capture_output=True, text=True)
    assert Path(where.stdout.strip()).is_relative_to(site)  # not the source checkout

    ws = tmp_path / "line"
    done = subprocess.run([sys.executable, "-m", "exdd", "workspace", "init", str(ws),
                           "--no-demo"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    params = yaml.safe_load((ws / "params.yaml").read_text())
    assert "lines" not in params and params["model"]["coreset"]["normal"] > 0
    assert "stages" in yaml.safe_load((ws / "dvc.yaml").read_text())
    tracked = subprocess.run(["git", "ls-files"], cwd=ws, check=True, capture_output=True,
                             text=True).stdout.split()
    assert {"dvc.yaml", "params.yaml"} <= set(tracked)
