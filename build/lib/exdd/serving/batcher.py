"""One scoring thread for the whole service; requests that wait are scored together.

The model already spreads one call over every core (torch's intra-op threads, faiss's
OpenMP, the backbone/search overlap of ``predict``), so concurrent calls would only compete
for them. Requests queue instead: when the thread is free it takes the oldest request and
every waiting one that still fits in one model batch (``model.runtime.batch_size``
images). A lone request starts at once (no waiting for company), so latency at concurrency
1 is that of ``predict``; under load the batches fill and throughput grows. The served
model is read once per batch, so a swap between batches never splits one.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from exdd.errors import ModelError
from exdd.serving.follower import ServedModel
from exdd.inference.encoded import score_bytes


@dataclass(frozen=True)
class Scored:
    """One request's results and the model version that produced them."""

    served: ServedModel
    scores: np.ndarray
    maps: np.ndarray
    images: list[np.ndarray]  # RGB model input, only when the request asked for overlays


@dataclass
class _Job:
    blobs: list[bytes]
    keep_images: bool
    settle: Callable[[Scored | BaseException], None]


_STOP = object()


class Batcher:
    """Runs the model of ``current()`` on one thread; ``score`` is awaited by requests."""

    def __init__(self, current: Callable[[], ServedModel | None]) -> None:
        self._current = current
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="exdd-scoring", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._queue.put(_STOP)
        self._thread.join()

    async def score(self, blobs: list[bytes], keep_images: bool = False) -> Scored:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Scored] = loop.create_future()

        def settle(result: Scored | BaseException) -> None:
            loop.call_soon_threadsafe(_settle, future, result)

        self._queue.put(_Job(blobs, keep_images, settle))
        return await future

    def _run(self) -> None:
        held: Any = None  # a job taken from the queue that did not fit the last batch
        while True:
            job = held if held is not None else self._queue.get()
            held = None
            if job is _STOP:
                return
            jobs = [job]
            served = self._current()
            room = (served.model.model.runtime.batch_size if served else 1) - len(job.blobs)
            while room > 0:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP or len(nxt.blobs) > room:
                    held = nxt
                    break
                jobs.append(nxt)
                room -= len(nxt.blobs)
            _score(served, jobs)


def _score(served: ServedModel | None, jobs: list[_Job]) -> None:
    """Score the jobs in one call and hand each its share (or the error)."""
    try:
        if served is None:
            raise ModelError("no model loaded yet")
        blobs = [b for job in jobs for b in job.blobs]
        pred, images = score_bytes(served.model, blobs, any(job.keep_images for job in jobs))
    except BaseException as err:  # noqa: BLE001 - handed to the requests, which answer for it
        for job in jobs:
            job.settle(err)
        return
    start = 0
    for job in jobs:
        end = start + len(job.blobs)
        job.settle(Scored(served, pred.scores[start:end], pred.maps[start:end],
                          images[start:end] if job.keep_images else []))
        start = end


def _settle(future: asyncio.Future[Scored], result: Scored | BaseException) -> None:
    if future.done():  # the client went away and the request was cancelled
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)
