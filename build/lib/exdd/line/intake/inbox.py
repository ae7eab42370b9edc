"""Where new line images arrive: a local folder or an S3 prefix, behind one interface.

Intake lists, fetches and removes the inbox's files; writers deliver into it (the review
export: each file written whole, so intake never sees half of one) and read back the
labels sidecar they merge their rows into.

An inbox lists its files with a *version* (local: size and mtime; S3: the ETag) so that a
file is only removed if it is still the very file that was fetched and safely stored: a
file replaced while the intake ran stays for the next run instead of being lost.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from exdd.errors import DataError
from exdd.fsutil import write_bytes_atomic
from exdd.storage import is_s3_uri, parse_s3_uri, s3_client

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InboxFile:
    """One file in the inbox: ``key`` is its '/'-separated path relative to the inbox."""

    key: str
    size: int
    version: str


class Inbox(Protocol):
    uri: str

    def list(self) -> list[InboxFile]: ...

    def fetch(self, item: InboxFile, dest: Path) -> None: ...

    def remove(self, item: InboxFile) -> bool: ...

    def read(self, key: str) -> bytes | None: ...

    def write(self, key: str, data: bytes) -> None: ...


def _fsync_copy(src, dest: Path) -> None:
    """Copy a readable binary stream to ``dest`` and fsync it."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest, "wb") as out:
        shutil.copyfileobj(src, out)
        out.flush()
        os.fsync(out.fileno())


class LocalInbox:
    """A folder; files in sub-folders count too, empty sub-folders are pruned on removal."""

    def __init__(self, root: str | os.PathLike[str], create: bool = False) -> None:
        self.root = Path(root)
        if create:
            self.root.mkdir(parents=True, exist_ok=True)
        self.uri = str(self.root.resolve())  # provenance in the manifest's source column
        if not self.root.is_dir():
            raise DataError(f"{self.root}: inbox folder does not exist")
        self.symlinks: list[str] = []  # keys of the last list()'s symbolic links

    def list(self) -> list[InboxFile]:
        """The inbox's files; symbolic links are never followed (they could point anywhere),
        they stay in the inbox and are reported in ``symlinks``."""
        items = []
        paths = sorted(self.root.rglob("*"))
        self.symlinks = [p.relative_to(self.root).as_posix() for p in paths if p.is_symlink()]
        for path in paths:
            if path.is_file() and not path.is_symlink():
                st = path.stat()
                key = path.relative_to(self.root).as_posix()
                items.append(InboxFile(key, st.st_size, f"{st.st_size}:{st.st_mtime_ns}"))
        return items

    def fetch(self, item: InboxFile, dest: Path) -> None:
        with open(self.root / item.key, "rb") as src:
            _fsync_copy(src, dest)
            st = os.fstat(src.fileno())
        if f"{st.st_size}:{st.st_mtime_ns}" != item.version:
            raise DataError(f"{self.root / item.key}: changed while being fetched; run again")

    def remove(self, item: InboxFile) -> bool:
        """Delete the file unless it changed since listing; True when it is gone."""
        path = self.root / item.key
        try:
            st = path.stat()
        except FileNotFoundError:
            return True
        if f"{st.st_size}:{st.st_mtime_ns}" != item.version:
            log.warning("%s changed during intake; left in the inbox for the next run", path)
            return False
        path.unlink()
        parent = path.parent
        while parent != self.root and not any(parent.iterdir()):
            parent.rmdir()
            parent = parent.parent
        return True

    def read(self, key: str) -> bytes | None:
        """The file's bytes, None when there is no such file."""
        path = self.root / key
        return path.read_bytes() if path.is_file() else None

    def write(self, key: str, data: bytes) -> None:
        """Deliver a file whole: a temp file renamed into place."""
        write_bytes_atomic(self.root / key, data)


class S3Inbox:
    """Objects under ``s3://bucket/prefix/``; folder markers (keys ending '/') are not files."""

    def __init__(self, uri: str) -> None:
        self.uri = uri.rstrip("/")
        self.bucket, self.prefix = parse_s3_uri(uri)
        self.client = s3_client()

    def list(self) -> list[InboxFile]:
        items = []
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.prefix
        )
        try:
            for page in pages:
                for obj in page.get("Contents", []):
                    key = obj["Key"][len(self.prefix):]
                    if key and not key.endswith("/"):
                        items.append(InboxFile(key, int(obj["Size"]), obj["ETag"]))
        except Exception as err:  # botocore raises many unrelated classes
            raise DataError(f"{self.uri}: cannot list the S3 inbox ({err})") from None
        return sorted(items, key=lambda i: i.key)

    def fetch(self, item: InboxFile, dest: Path) -> None:
        obj = self.client.get_object(Bucket=self.bucket, Key=self.prefix + item.key,
                                     IfMatch=item.version)
        _fsync_copy(obj["Body"], dest)

    def remove(self, item: InboxFile) -> bool:
        """Delete the object unless its ETag changed since listing; True when it is gone."""
        key = self.prefix + item.key
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=key)
        except self.client.exceptions.ClientError as err:
            if err.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return True
            raise
        if head["ETag"] != item.version:
            log.warning("%s/%s changed during intake; left for the next run", self.uri, item.key)
            return False
        self.client.delete_object(Bucket=self.bucket, Key=key)
        return True

    def read(self, key: str) -> bytes | None:
        """The object's bytes, None when there is no such object."""
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self.prefix + key)[
                "Body"].read()
        except self.client.exceptions.NoSuchKey:
            return None
        except Exception as err:  # noqa: BLE001 - botocore raises many types
            raise DataError(f"{self.uri}/{key}: cannot read ({type(err).__name__})") from None

    def write(self, key: str, data: bytes) -> None:
        """Deliver an object whole: a single PUT is atomic, readers never see half of it."""
        try:
            self.client.put_object(Bucket=self.bucket, Key=self.prefix + key, Body=data)
        except Exception as err:  # noqa: BLE001
            raise DataError(f"{self.uri}/{key}: cannot write ({type(err).__name__})") from None


def open_inbox(uri: str, create: bool = False) -> Inbox:
    """A local folder path or an ``s3://bucket/prefix`` URI; ``create`` makes a missing
    folder (a writer delivering the first files) instead of refusing it."""
    return S3Inbox(uri) if is_s3_uri(uri) else LocalInbox(uri, create)
