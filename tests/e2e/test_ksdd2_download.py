"""KSDD2 download against a real HTTP server on 127.0.0.1 serving zips built from real PNGs."""

import hashlib
import io
import json
import logging
import socket
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from exdd.data.readers import load_samples
from exdd.data.ksdd2 import download_ksdd2
from exdd.errors import DataError


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def ksdd2_zip(top: str = "", drop_mask: str | None = None, stray: bool = True,
              pairs: int = 2, shape: tuple[int, int] = (30, 12)) -> bytes:
    """A tiny KSDD2-shaped archive: ``pairs`` train + test pairs (height x width ``shape``)
    per split, every odd one a defect."""
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for split, first in (("train", 10000), ("test", 20000)):
            for k in range(pairs):
                stem = f"{split}/{first + k}"
                mask = np.zeros(shape, np.uint8)
                mask[5:12, 3:8] = 255 * (k % 2)
                zf.writestr(f"{top}{stem}.png", _png((rng.random(shape) * 255).astype(np.uint8)))
                if stem != drop_mask:
                    zf.writestr(f"{top}{stem}_GT.png", _png(mask))
        if stray:  # the real archive ships such a duplicate pair
            zf.writestr(f"{top}train/10000 (copy).png", _png(np.zeros((30, 12), np.uint8)))
            zf.writestr(f"{top}train/10000_GT (copy).png", _png(np.zeros((30, 12), np.uint8)))
        zf.writestr(f"{top}split_weakly_0.pyb", b"publisher extra")
    return buf.getvalue()


class _Handler(BaseHTTPRequestHandler):
    """GET of the server's ``files``, with Range support; ``cut`` paths break once midway."""

    def do_GET(self) -> None:  # noqa: N802 (http.server naming)
        body = self.server.files.get(self.path)
        if body is None:
            self.send_error(404, "not here")
            return
        start = 0
        if self.headers.get("Range"):
            start = int(self.headers["Range"].removeprefix("bytes=").rstrip("-"))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Type", "application/zip")
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        if self.path in self.server.cut:
            self.server.cut.discard(self.path)
            self.wfile.write(body[start:start + len(body) // 2])
            self.close_connection = True
            return
        self.wfile.write(body[start:])

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[ThreadingHTTPServer]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.files, httpd.cut = {}, set()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def test_download_verify_unpack_top_folder(server, tmp_path: Path) -> None:
    body = ksdd2_zip(top="KolektorSDD2/")
    server.files["/KolektorSDD2.zip"] = body
    out = tmp_path / "ksdd2"
    got = download_ksdd2(out, server.url + "/KolektorSDD2.zip",
                         sha256=hashlib.sha256(body).hexdigest(), timeout=10)
    assert got == out
    assert not (out / "train" / "10000 (copy).png").exists()
    samples = load_samples(out)
    assert [(s.split, s.label) for s in samples] == [
        ("train", 0), ("train", 1), ("test", 0), ("test", 1)]
    assert _leftovers(tmp_path) == []
    source = json.loads((out / "SOURCE.json").read_text())
    assert source["sha256"] == hashlib.sha256(body).hexdigest()
    assert source["pairs"] == {"train": 2, "test": 2}
    # The same archive (by checksum) is not fetched again, even from a dead URL ...
    sha = source["sha256"]
    assert download_ksdd2(out, server.url + "/gone.zip", sha256=sha) == out
    # ... but another source is, and its failure leaves the earlier folder intact.
    with pytest.raises(DataError, match="404"):
        download_ksdd2(out, server.url + "/gone.zip", sha256=None)
    assert len(load_samples(out)) == 4 and _leftovers(tmp_path) == []


def test_replaces_a_ksdd2_layout_from_another_source(server, tmp_path: Path) -> None:
    server.files["/a.zip"] = ksdd2_zip(stray=False)
    server.files["/b.zip"] = ksdd2_zip(top="KolektorSDD2/")
    out = download_ksdd2(tmp_path / "d", server.url + "/a.zip", sha256=None)
    assert download_ksdd2(out, server.url + "/b.zip", sha256=None) == out
    assert json.loads((out / "SOURCE.json").read_text())["url"].endswith("/b.zip")


def test_resumes_a_broken_transfer_without_checksum(server, tmp_path: Path, caplog) -> None:
    server.files["/k.zip"] = ksdd2_zip()
    server.cut.add("/k.zip")
    with caplog.at_level(logging.WARNING, logger="exdd.data.ksdd2"):
        out = download_ksdd2(tmp_path / "d", server.url + "/k.zip", sha256=None, timeout=10)
    assert not server.cut  # the first response really was broken off ...
    assert "resuming" in caplog.text  # ... and continued with a Range request
    assert len(load_samples(out, "test")) == 2


@pytest.mark.parametrize("case, match", [
    ("checksum", "checksum mismatch"),
    ("badzip", "not a valid zip"),
    ("layout", "1 images without a _GT mask: 20001"),
    ("nosplits", "no train/ and test/"),
    ("http404", "HTTP error 404"),
    ("unreachable", "cannot reach the host"),
])
def test_failures_are_data_errors_and_leave_nothing(server, tmp_path: Path, case: str,
                                                     match: str) -> None:
    bodies = {"checksum": ksdd2_zip(), "badzip": b"<html>please log in</html>",
              "layout": ksdd2_zip(drop_mask="test/20001"), "nosplits": ksdd2_zip(top="a/b/")}
    url = server.url + "/data.zip"
    if case in bodies:
        server.files["/data.zip"] = bodies[case]
    if case == "unreachable":
        with socket.socket() as s:  # a loopback port nobody listens on
            s.bind(("127.0.0.1", 0))
            url = f"http://127.0.0.1:{s.getsockname()[1]}/data.zip"
    sha = "0" * 64 if case == "checksum" else None
    out = tmp_path / "ksdd2"
    with pytest.raises(DataError, match=match) as err:
        download_ksdd2(out, url, sha256=sha, timeout=10)
    assert url in str(err.value)
    assert not out.exists() and _leftovers(tmp_path) == []


def test_refuses_to_replace_unrelated_folder(server, tmp_path: Path) -> None:
    server.files["/k.zip"] = ksdd2_zip()
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="refusing to replace"):
        download_ksdd2(out, server.url + "/k.zip", sha256=None)
    assert (out / "notes.txt").read_text() == "keep me"
