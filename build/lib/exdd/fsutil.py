"""Atomic writes, content hashes and file locks: nothing half-written is ever visible.

Files and folders end up with the permissions the process umask gives (as ``open`` and
``mkdir`` would), not the owner-only ones of their temporary names: a dashboard or worker
running as another user of the group reads them on a shared volume.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from exdd.errors import DataError, StorageError

CHUNK = 1 << 20
FILE_MODE = 0o666  # before the umask, as open() creates files
DIR_MODE = 0o777  # before the umask, as mkdir() creates folders


def umask() -> int:
    """The process umask, read without changing it where Linux shows it."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, streamed."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Write to a temp file in the same folder, fsync, then rename over the target.

    A full disk or read-only folder is a StorageError naming ``path``; no temp file stays.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as err:
        raise StorageError.writing(path, err) from None
    try:
        os.fchmod(fd, FILE_MODE & ~umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(err, OSError):
            raise StorageError.writing(path, err) from None
        raise


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a staging folder beside ``target``; on success it replaces ``target`` whole.

    On error the staging folder is removed and any earlier ``target`` is left untouched;
    a full disk or read-only folder (an OSError while staging) is a StorageError naming
    ``target``.
    """
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.staging-", dir=target.parent))
        os.chmod(staging, DIR_MODE & ~umask())
    except OSError as err:
        raise StorageError.writing(target, err) from None
    try:
        yield staging
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.replace(target, old / "x")
            os.replace(staging, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, target)
    except BaseException as err:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(err, OSError):
            raise StorageError.writing(target, err) from None
        raise


@contextlib.contextmanager
def locked(path: str | os.PathLike[str], busy: str | None = None) -> Iterator[None]:
    """Hold an exclusive advisory lock (``flock``) for the block, so that two processes
    never change the same state at once: on ``path`` itself when it is a folder, else on
    that lock file (created if missing).

    Without ``busy`` a held lock is waited for; with it, it is a DataError
    ``<path>: <busy>`` at once (for work that must not queue up behind a running one).
    """
    path = Path(path)
    if path.is_dir():
        fd = os.open(path, os.O_RDONLY)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDONLY | os.O_CREAT, FILE_MODE)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if busy is None else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DataError(f"{path}: {busy}") from None
        yield
    finally:
        os.close(fd)
