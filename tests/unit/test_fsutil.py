"""exdd.fsutil: atomic files and folders get the permissions the umask gives, so another
user of a shared volume (a dashboard, a worker) can read what a run wrote."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from exdd.fsutil import atomic_dir, umask, write_text_atomic


@pytest.fixture
def process_umask(request: pytest.FixtureRequest) -> Iterator[int]:
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("process_umask", [0o022, 0o002, 0o077], indirect=True)
def test_atomic_writes_follow_the_umask(tmp_path: Path, process_umask: int) -> None:
    assert umask() == process_umask
    with atomic_dir(tmp_path / "model") as staging:
        (staging / "bank.npy").write_bytes(b"x")
    write_text_atomic(tmp_path / "scores.csv", "image,score\n")
    assert _mode(tmp_path / "model") == 0o777 & ~process_umask
    assert _mode(tmp_path / "scores.csv") == 0o666 & ~process_umask
    assert os.umask(process_umask) == process_umask  # reading it changed nothing


@pytest.mark.parametrize("process_umask", [0o022], indirect=True)
def test_another_user_reads_what_a_run_wrote(process_umask: int) -> None:
    runuser = shutil.which("runuser")
    if os.geteuid() != 0 or runuser is None:
        pytest.skip("needs root and runuser to act as another user")
    # pytest's own temp root is owner-only: the shared volume is a folder others can enter.
    with tempfile.TemporaryDirectory(prefix="exdd-shared-") as folder:
        shared = Path(folder)
        shared.chmod(0o755)
        _write_and_read_as_nobody(runuser, shared)


def _write_and_read_as_nobody(runuser: str, shared: Path) -> None:
    with atomic_dir(shared / "scores") as staging:
        (staging / "scores.csv").write_text("image,score\na.png,0.5\n")
    write_text_atomic(shared / "outcome.json", "{}\n")
    for path in (shared / "scores" / "scores.csv", shared / "outcome.json"):
        proc = subprocess.run([runuser, "-u", "nobody", "--", "cat", str(path)],
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
    assert "a.png" in (shared / "scores" / "scores.csv").read_text()
