"""Shared fixtures: a small generated demo data set, a real S3 server on loopback
(see ``s3server.py``).

``tests/unit``: the library on arrays and temporary files; ``tests/e2e``: through real
line workspaces (git + DVC), MLflow stores, servers, Airflow DAGs and a browser, marked
``e2e`` here so ``-m "not e2e"`` also selects the fast part. ``make test-fast`` runs the unit
tests, ``make test`` both.

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

E2E = Path(__file__).resolve().parent / "e2e"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(E2E):
            item.add_marker(pytest.mark.e2e)


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
