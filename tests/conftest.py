"""Shared fixtures: a small generated demo data set, a real S3 server on loopback
(see ``s3server.py``).

The test process is an entry point like the ``exdd`` command: it applies exdd's CPU tuning
(``exdd.runtime``) before any test imports torch.
"""

from __future__ import annotations

import pytest

from pathlib import Path

from exdd import runtime

runtime.configure()

from exdd.config import DemoConfig  # noqa: E402 - after the CPU tuning
from exdd.data.demo import make_demo  # noqa: E402
from s3server import S3Server, S3ServerError  # noqa: E402

# Small enough to fit a model in seconds, with defects in both splits.
SMALL_DEMO = DemoConfig(height=64, width=48, train_normal=10, train_defect=4, test_normal=6,
                        test_defect=6, seed=3)


@pytest.fixture(scope="session")
def small_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One KSDD2-layout demo data set for the whole session; tests only read it."""
    return make_demo(tmp_path_factory.mktemp("small-demo") / "data", SMALL_DEMO)


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory: pytest.TempPathFactory):
    """SeaweedFS ``weed mini`` (else moto) on 127.0.0.1, data kept in a module temp dir."""
    server = S3Server(tmp_path_factory.mktemp("s3-data"))
    try:
        server.start()
    except S3ServerError as err:
        pytest.skip(f"no loopback S3 server could start (weed mini, moto): {err}")
    yield server
    server.stop()
