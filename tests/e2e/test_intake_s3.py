"""Line-data intake from an S3 inbox on a real loopback S3 server (SeaweedFS, else moto)."""

from __future__ import annotations

import hashlib
import json
import os
import socket
from pathlib import Path

import pytest
from test_intake import H, W, files_in, make_inbox, save, seed_dataset, texture

from exdd.config import IntakeConfig
from exdd.data.readers import load_samples
from exdd.line.intake import validate_inbox

BUCKET = "line-inbox"
PREFIX = "line1/2026-11-29"


def test_s3_inbox_every_object_filed_once(s3_server, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    client = s3_server.client()
    s3_server.create_bucket(BUCKET)
    ds, local = tmp_path / "ds", tmp_path / "batch"
    seed_dataset(ds)
    seeded = files_in(ds)
    expect = make_inbox(local, ds)
    before = files_in(local)
    for key in before:
        client.upload_file(str(local / key), BUCKET, f"{PREFIX}/{key}")
    client.put_object(Bucket=BUCKET, Key=f"{PREFIX}/folder-marker/", Body=b"")
    save(tmp_path / "other.png", texture(42, h=H, w=W))
    client.upload_file(str(tmp_path / "other.png"), BUCKET, "line1/other-night.png")

    result = validate_inbox(f"s3://{BUCKET}/{PREFIX}", ds, tmp_path / "report",
                            IntakeConfig(max_failed_fraction=0.9))

    left = {o["Key"] for o in client.list_objects_v2(Bucket=BUCKET).get("Contents", [])}
    assert left == {f"{PREFIX}/folder-marker/", "line1/other-night.png"}  # not in the batch
    assert set(result.placements) == set(before)
    stored = {rel for rel in files_in(ds) if rel != "manifest.csv" and "/reasons/" not in rel
              and rel not in seeded}
    assert stored == set(result.placements.values())
    for key, digest in before.items():
        assert hashlib.sha256((ds / result.placements[key]).read_bytes()).hexdigest() == digest
    bad = {k for k, cols in expect.items() if cols}
    assert set(result.quarantined) == {result.placements[k] for k in bad}
    assert set(result.accepted) == {result.placements[k] for k in set(expect) - bad}
    reason = json.loads((ds / "quarantine" / result.batch / "reasons" / "truncated.jpg.json")
                        .read_text())
    assert reason["inbox"] == f"s3://{BUCKET}/{PREFIX}"
    assert [f["column"] for f in reason["failed"]] == ["decodable"]
    sources = {s.image.name for s in load_samples(ds / "manifest.csv")}
    assert {Path(p).name for p in result.accepted} <= sources


def _listening_addresses(pid: int) -> set[str]:
    """Local addresses of the TCP sockets process ``pid`` listens on (from /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        target = os.readlink(fd)
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    found = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            cols = line.split()
            if cols[3] == "0A" and cols[9] in inodes:  # 0A: LISTEN
                host = cols[1].split(":")[0]
                found.add(socket.inet_ntop(socket.AF_INET, bytes.fromhex(host)[::-1])
                          if len(host) == 8 else f"ipv6:{host}")
    return found


def test_s3_server_restart_keeps_data_on_loopback_only(s3_server) -> None:
    s3_server.create_bucket("keep")
    s3_server.client().put_object(Bucket="keep", Key="a/b.bin", Body=b"\x00kept\xff")
    endpoint = s3_server.endpoint_url
    s3_server.restart()
    assert s3_server.endpoint_url == endpoint
    body = s3_server.client().get_object(Bucket="keep", Key="a/b.bin")["Body"].read()
    assert body == b"\x00kept\xff"
    if s3_server.backend == "weed":
        assert _listening_addresses(s3_server.pid) == {"127.0.0.1"}
