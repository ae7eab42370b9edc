"""Shared fixtures: a real S3 server on loopback (see ``s3server.py``).

The test process is an entry point like the ``exdd`` command: it applies exdd's CPU tuning
(``exdd.runtime``) before any test imports torch.
"""

from __future__ import annotations

import pytest

from exdd import runtime

runtime.configure()
from s3server import S3Server, S3ServerError


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
