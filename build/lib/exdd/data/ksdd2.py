"""Fetch KolektorSDD2 from its publisher and lay it out as ``train/`` and ``test/``.

The archive (Bozic et al., "Mixed supervision for surface-defect detection", 2021;
CC BY-NC-SA 4.0, ViCoS lab, University of Ljubljana) is one zip of about 850 MB. The
publisher's host is slow and known to drop long transfers, so a broken stream is resumed
with an HTTP Range request. The result appears at ``out`` whole or not at all.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from exdd import __version__
from exdd.data.readers import SPLITS
from exdd.errors import DataError
from exdd.fsutil import CHUNK, atomic_dir, sha256_file

log = logging.getLogger(__name__)

# The publisher's short link; it redirects to data.vicos.si/datasets/KSDD/KolektorSDD2.zip.
PUBLISHER_URL = "https://go.vicos.si/kolektorsdd2"
# sha256 of that zip (853,126,555 bytes) as published alongside third-party mirrors of it.
ARCHIVE_SHA256 = "edcdb486809b24f1d17b785e30c52fafc5999554dd5fe18ddf77b61ceb6f36a8"
DOWNLOAD_TIMEOUT_S = 60.0  # per blocking socket operation, not for the whole transfer
DOWNLOAD_RETRIES = 20  # resumptions of a broken transfer before giving up
# KSDD2 file names: NNNNN.png and its mask NNNNN_GT.png. Anything else (the archive
# ships stray "10301 (copy).png" duplicates) is dropped so the folder loads cleanly.
PAIR_NAME = re.compile(r"^(\d+)(_GT)?\.png$")
LISTED_PROBLEMS = 5  # how many offending file names an error message shows
USER_AGENT = f"exdd/{__version__}"
SOURCE_FILE = "SOURCE.json"  # provenance written beside train/ and test/


def download_ksdd2(out: str | Path, url: str = PUBLISHER_URL,
                   sha256: str | None = ARCHIVE_SHA256,
                   timeout: float = DOWNLOAD_TIMEOUT_S,
                   retries: int = DOWNLOAD_RETRIES) -> Path:
    """Download, verify and unpack KolektorSDD2 into ``out``; return ``out``.

    ``out`` already unpacked from an archive with the same checksum is returned as is;
    another KSDD2-layout folder (e.g. the demo set) is replaced; a non-empty folder of
    anything else is refused. ``sha256=None`` skips the checksum (e.g. for a mirror that
    re-packed the archive). ``out/SOURCE.json`` records the URL and the archive's sha256.
    """
    out = Path(out)
    if _already_unpacked(out, url, sha256):
        log.info("%s already holds this KolektorSDD2 archive; not downloading again", out)
        return out
    refuse_foreign(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.download-", suffix=".zip", dir=out.parent)
    os.close(fd)
    archive = Path(tmp)
    try:
        fetch(url, archive, timeout, retries)
        actual = sha256_file(archive)
        if sha256 and actual != sha256.lower():
            raise DataError(f"{url}: checksum mismatch: sha256 {actual}, expected {sha256} "
                            "(corrupt download or a different archive)")
        with atomic_dir(out) as staging:
            counts = unpack_ksdd2(archive, staging, source=url)
            source = {"url": url, "sha256": actual, "bytes": archive.stat().st_size,
                      "pairs": counts}
            (staging / SOURCE_FILE).write_text(json.dumps(source, indent=2) + "\n")
    finally:
        archive.unlink(missing_ok=True)
    return out


def fetch(url: str, dest: Path, timeout: float = DOWNLOAD_TIMEOUT_S,
          retries: int = DOWNLOAD_RETRIES) -> None:
    """Stream ``url`` into ``dest`` with a progress bar, resuming a broken transfer."""
    received, total, source, problem = 0, None, url, ""
    with open(dest, "wb") as f, tqdm(unit="B", unit_scale=True, unit_divisor=1024,
                                     desc=PurePosixPath(url).name or url) as bar:
        for _ in range(retries + 1):
            try:
                request = urllib.request.Request(source, headers={"User-Agent": USER_AGENT})
                if received:
                    request.add_header("Range", f"bytes={received}-")
                with urllib.request.urlopen(request, timeout=timeout) as response:
                    if received:
                        _check_resumed(url, response, received)
                    else:
                        total = _length(response)
                        bar.reset(total=total)
                    source = response.geturl()  # resume at the redirect's target
                    for block in iter(lambda: response.read(CHUNK), b""):
                        f.write(block)
                        received += len(block)
                        bar.update(len(block))
                if total is None or received >= total:
                    return
                problem = f"connection closed after {received} of {total} bytes"
            except urllib.error.HTTPError as err:
                raise DataError(f"{url}: HTTP error {err.code} {err.reason}") from None
            except urllib.error.URLError as err:
                if not received:
                    raise DataError(f"{url}: cannot reach the host ({err.reason})") from None
                problem = str(err.reason)
            except (OSError, http.client.HTTPException) as err:
                problem = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
            log.warning("%s: transfer broken at %d bytes (%s); resuming", url, received, problem)
    raise DataError(f"{url}: download failed after {retries + 1} attempts at {received} "
                    f"bytes: {problem}")


def unpack_ksdd2(archive: Path, dest: Path, source: str | None = None) -> dict[str, int]:
    """Extract the zip into ``dest`` (``train/``, ``test/`` at its top) and check the layout.

    A single top-level folder in the archive is looked through; other top-level files
    (the publisher's ``split_weakly_*.pyb``) are kept. Returns image/mask pairs per split.
    """
    source = source or str(archive)
    unpack = dest / ".unpack"
    unpack.mkdir()
    try:
        with zipfile.ZipFile(archive) as zf:
            members = zf.infolist()
            unsafe = [m.filename for m in members
                      if m.filename.startswith("/") or ".." in PurePosixPath(m.filename).parts]
            if unsafe:
                raise DataError(f"{source}: archive has unsafe paths, e.g. {unsafe[0]!r}")
            for member in tqdm(members, desc="extracting", unit="file"):
                zf.extract(member, unpack)
    except (zipfile.BadZipFile, zlib.error, EOFError) as err:
        raise DataError(f"{source}: not a valid zip archive ({err})") from None
    root = _dataset_root(unpack, source)
    for entry in list(root.iterdir()):
        os.replace(entry, dest / entry.name)
    shutil.rmtree(unpack)
    dropped = _drop_strays(dest)
    if dropped:
        log.info("%s: dropped %d file(s) outside the NNNNN.png / NNNNN_GT.png naming, e.g. %s",
                 source, len(dropped), dropped[0])
    return check_layout(dest, source)


def check_layout(root: Path, source: str | None = None) -> dict[str, int]:
    """Every split folder holds images, each with its ``_GT`` mask and vice versa."""
    source = source or str(root)
    counts = {}
    for split in SPLITS:
        folder = root / split
        if not folder.is_dir():
            raise DataError(f"{source}: no {split}/ folder (KolektorSDD2 layout expected)")
        images, masks = set(), set()
        for f in folder.iterdir():
            match = PAIR_NAME.match(f.name)
            if match:
                (masks if match.group(2) else images).add(match.group(1))
        if not images:
            raise DataError(f"{source}: {split}/ holds no NNNNN.png images")
        for problem, names in (("images without a _GT mask", images - masks),
                               ("masks without an image", masks - images)):
            if names:
                shown = ", ".join(sorted(names)[:LISTED_PROBLEMS])
                raise DataError(f"{source}: {split}/ has {len(names)} {problem}: {shown}")
        counts[split] = len(images)
    return counts


def _already_unpacked(out: Path, url: str, sha256: str | None) -> bool:
    """``out`` holds the layout and came from this archive (by checksum, else by URL)."""
    try:
        source = json.loads((out / SOURCE_FILE).read_text())
    except (OSError, ValueError):
        return False
    same = source.get("sha256") == sha256.lower() if sha256 else source.get("url") == url
    return same and has_layout(out)


def refuse_foreign(out: Path) -> None:
    """Data sets replace ``out`` whole: allow that only for nothing, an empty folder or a
    KSDD2-layout folder, never for a folder of other files given by mistake."""
    if not out.exists() or out.is_dir() and (not any(out.iterdir()) or has_layout(out)):
        return
    raise DataError(f"{out}: exists and is not a KSDD2-layout data set; refusing to replace "
                    "it (choose an empty or new --out)")


def has_layout(root: Path) -> bool:
    """Whether ``root`` already holds a complete KSDD2-layout data set."""
    try:
        check_layout(root)
    except DataError:
        return False
    return True


def _dataset_root(unpack: Path, source: str) -> Path:
    """``unpack`` itself or its one folder holding ``train/`` and ``test/``."""
    def holds_splits(d: Path) -> bool:
        return all((d / s).is_dir() for s in SPLITS)

    if holds_splits(unpack):
        return unpack
    folders = [d for d in unpack.iterdir() if d.is_dir() and d.name != "__MACOSX"]
    if len(folders) == 1 and holds_splits(folders[0]):
        return folders[0]
    top = sorted(p.name for p in unpack.iterdir())[:LISTED_PROBLEMS]
    raise DataError(f"{source}: archive holds no train/ and test/ folders "
                    f"(top level: {', '.join(top) or 'empty'})")


def _drop_strays(root: Path) -> list[str]:
    """Remove what is not an image or mask file from the split folders; return its names."""
    dropped = []
    for split in SPLITS:
        for f in sorted((root / split).iterdir()):
            if PAIR_NAME.match(f.name):
                continue
            if f.is_dir():
                shutil.rmtree(f)
            else:
                f.unlink()
            dropped.append(f"{split}/{f.name}")
    return dropped


def _length(response: http.client.HTTPResponse) -> int | None:
    value = response.headers.get("Content-Length")
    return int(value) if value and value.isdigit() else None


def _check_resumed(url: str, response: http.client.HTTPResponse, received: int) -> None:
    """A resumed response must continue exactly where the file stopped."""
    content_range = response.headers.get("Content-Range", "")
    if response.status != 206 or not content_range.startswith(f"bytes {received}-"):
        raise DataError(f"{url}: the server cannot resume the broken transfer at byte "
                        f"{received} (status {response.status}, Content-Range "
                        f"{content_range or 'missing'})")
