"""Real ``exdd serve`` processes on loopback for the serving tests, and the files they score."""

from __future__ import annotations

import csv
import io
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import yaml
from PIL import Image

from exdd.cli import main as exdd_main

READY_TIMEOUT_S = 600.0  # torch import, model download and warm-up on a busy 2-core machine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_lines_file(root: Path, workspace: Path, serve: dict[str, Any]) -> Path:
    """The params file that lists the line (as infra/params.yaml does) with ``serve``."""
    path = root / "lines.yaml"
    path.write_text(yaml.safe_dump({"serve": serve, "lines": [
        {"name": "demo", "workspace": str(workspace)}]}))
    return path


class ServeProcess:
    """``python -m exdd serve`` in its own process; its log goes to ``log``."""

    def __init__(self, lines_file: Path, log: Path, env: dict[str, str] | None = None,
                 line: str = "demo") -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self._out = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "exdd", "serve", "--line", line, "--params", str(lines_file),
             "--port", str(self.port)],
            stdout=self._out, stderr=subprocess.STDOUT, cwd="/",
            env={**os.environ, "TQDM_DISABLE": "1", **(env or {})})
        self.client = httpx.Client(base_url=self.url, timeout=120.0)

    def wait(self, path: str = "/health", status: int = 200,
             timeout: float = READY_TIMEOUT_S) -> httpx.Response:
        """Poll ``path`` until it answers ``status``."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"exdd serve exited {self.proc.returncode}: {self.tail()}")
            try:
                response = self.client.get(path)
                if response.status_code == status:
                    return response
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"{path} never answered {status}: {self.tail()}")
            time.sleep(0.2)

    def wait_version(self, version: int, timeout: float = READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while self.wait("/ready").json()["model_version"] != version:
            if time.monotonic() > deadline:
                raise AssertionError(f"version {version} never served: {self.tail()}")
            time.sleep(0.2)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        self.client.close()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._out.close()


def encoded(path: Path, fmt: str, mode: str) -> bytes:
    """An image file re-encoded (PNG, JPEG, BMP) in a mode (L grey, RGB colour)."""
    buf = io.BytesIO()
    Image.open(path).convert(mode).save(buf, format=fmt)
    return buf.getvalue()


def predict_scores(model_dir: Path, images: list[Path], out: Path) -> np.ndarray:
    """What ``exdd predict`` writes for ``images``, as float64 scores."""
    assert exdd_main(["predict", "--model", str(model_dir), "--out", str(out),
                      *map(str, images)]) == 0
    with open(out / "scores.csv", newline="") as f:
        return np.array([float(row["score"]) for row in csv.DictReader(f)], dtype="<f8")
