"""The line's champion, kept loaded while the registry alias moves (publish, rollback).

A background thread reads the ``champion`` alias every ``poll_interval_s``. A new version is
downloaded from the registry, verified (every file's sha256, and the model hash the version
was registered with), loaded and warmed up beside the one in service; only then does the
reference to the served model change, in one assignment. A request holds the model it
started with to its end, so none is dropped or scored by a half-loaded model, and every
answer names the version that scored it. Nothing is kept on disk: replicas are stateless.
"""

from __future__ import annotations

import logging
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from exdd.errors import ExddError, ModelError

if TYPE_CHECKING:
    from exdd.detector.model import ExDD
    from exdd.line.registry import Registry

log = logging.getLogger(__name__)
WARMUP_SIZE = (8, 8)  # a tiny blank image: loads the backbone and builds the search index


@dataclass(frozen=True)
class ServedModel:
    """One loaded registry version and what every answer it gives names."""

    name: str
    version: int
    model_hash: str
    threshold: float | None
    model: ExDD


class ChampionFollower:
    """Loads the champion, then follows its alias; ``current`` is the model in service."""

    def __init__(self, registry: Registry, poll_interval_s: float,
                 on_event: Callable[[str, ServedModel | None], None] = lambda *_: None) -> None:
        self.registry = registry
        self.poll_interval_s = poll_interval_s
        self.current: ServedModel | None = None
        self._on_event = on_event  # "swap" (new model) or "error" (poll or load failed)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def poll(self) -> bool:
        """Serve the version the alias names now; True when it changed."""
        from exdd.line.registry import CHAMPION

        version = self.registry.alias(CHAMPION)
        if version is None or (self.current and self.current.version == int(version.version)):
            return False
        served = self._load(version)
        self.current = served  # the swap: one reference assignment
        log.info("serving %s version %d (model %s)", served.name, served.version,
                 served.model_hash[:12])
        self._on_event("swap", served)
        return True

    def _load(self, version: Any) -> ServedModel:
        from exdd.detector.model import ExDD
        from exdd.detector.modelio import model_hash
        from exdd.line.registry import TAG_HASH
        from exdd.inference.encoded import score_bytes

        with tempfile.TemporaryDirectory(prefix="exdd-serve-model-") as tmp:
            local = self.registry.download_model_dir(version, Path(tmp))
            model = ExDD.load(local)  # verifies every file's sha256
            digest = model_hash(local)
        if digest != version.tags.get(TAG_HASH):
            raise ModelError(f"{self.registry.name} version {version.version}: downloaded model "
                             f"{digest[:12]} is not the registered {version.tags.get(TAG_HASH)}")
        score_bytes(model, [_blank_png()])
        threshold = version.tags.get("threshold")
        return ServedModel(self.registry.name, int(version.version), digest,
                           float(threshold) if threshold else None, model)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll()
            except ExddError as err:
                log.warning("champion not updated: %s", err)
                self._on_event("error", self.current)
            except Exception:  # noqa: BLE001 - the service outlives a bad poll; the log says why
                log.exception("champion not updated")
                self._on_event("error", self.current)
            self._stop.wait(self.poll_interval_s)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="exdd-champion", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def _blank_png() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", WARMUP_SIZE).save(buf, format="PNG")
    return buf.getvalue()
