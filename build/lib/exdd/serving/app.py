"""The HTTP service: ``POST /v1/score``, ``GET /health``, ``/ready``, ``/metrics``.

FastAPI on uvicorn (see README, "Online scoring"). Every answer is JSON; an error is
``{"error": "<one line>"}`` with a 4xx status for what the client sent, and a bare 500
for anything else (the log has the traceback; the client gets no stack trace and no path).
"""

from __future__ import annotations

import base64
import hmac
import io
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any, Literal

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from PIL import Image
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import generate_latest
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException, MultiPartParser

from exdd.config import ServeConfig
from exdd.serving.batcher import Batcher, Scored
from exdd.serving.follower import ChampionFollower, ServedModel
from exdd.inference.encoded import BAD_REQUEST, TOO_LARGE, ImageError, check_image
from exdd.inference.overlays import overlay

if TYPE_CHECKING:
    from exdd.line.registry import Registry

log = logging.getLogger(__name__)
UNAUTHORIZED, UNAVAILABLE = 401, 503
MULTIPART = "multipart/form-data"
BODY_NAME = "body"  # how the one image of a raw request is named in messages
KNOWN_PATHS = frozenset({"/health", "/ready", "/metrics", "/v1/score"})  # metric labels


@dataclass(frozen=True)
class Upload:
    name: str
    data: bytes


class Metrics:
    """The service's Prometheus metrics, in a registry of its own."""

    def __init__(self, cfg: ServeConfig) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("exdd_serve_requests", "HTTP requests by path and status",
                                ["path", "status"], registry=self.registry)
        self.errors = Counter("exdd_serve_errors", "requests answered with an error, by status",
                              ["status"], registry=self.registry)
        self.latency = Histogram("exdd_serve_request_seconds", "request latency by path",
                                 ["path"], buckets=cfg.latency_buckets_s, registry=self.registry)
        self.images = Counter("exdd_serve_images", "images scored", registry=self.registry)
        self.version = Gauge("exdd_serve_model_version", "registry version in service",
                             registry=self.registry)
        self.swaps = Counter("exdd_serve_model_swaps", "models put into service",
                             registry=self.registry)
        self.poll_errors = Counter("exdd_serve_registry_errors",
                                   "champion polls or loads that failed", registry=self.registry)

    def model_event(self, event: str, served: ServedModel | None) -> None:
        if event == "swap" and served is not None:
            self.swaps.inc()
            self.version.set(served.version)
        elif event == "error":
            self.poll_errors.inc()


def _error(status: int, message: str) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == UNAUTHORIZED else None
    return JSONResponse({"error": message}, status_code=status, headers=headers)


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refused as soon as it is known to be over ``limit`` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ImageError(f"request body of {declared} bytes is over the limit of {limit}",
                         TOO_LARGE)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ImageError(f"request body is over the limit of {limit} bytes", TOO_LARGE)
        chunks.append(chunk)
    return b"".join(chunks)


async def _uploads(request: Request, cfg: ServeConfig) -> tuple[list[Upload], bool]:
    """The images of a request and whether it is the batch (multipart) form."""
    body = await _read_body(request, cfg.max_body_bytes)
    if not request.headers.get("content-type", "").startswith(MULTIPART):
        return [Upload(BODY_NAME, body)], False

    async def stream() -> AsyncIterator[bytes]:
        yield body

    parser = MultiPartParser(request.headers, stream(), max_files=cfg.max_images,
                             max_fields=0, max_part_size=cfg.max_body_bytes)
    try:
        form = await parser.parse()
    except MultiPartException as err:
        status = TOO_LARGE if "Too many files" in err.message else BAD_REQUEST
        raise ImageError(f"multipart body: {err.message}", status) from None
    uploads = []
    for i, (field, value) in enumerate(form.multi_items(), start=1):
        if isinstance(value, UploadFile):
            name = f"part {i} ({PurePosixPath(value.filename or field).name})"
            uploads.append(Upload(name, await value.read()))
    await form.close()
    if not uploads:
        raise ImageError("multipart body holds no image file parts")
    return uploads, True


def _overlay_png(scored: Scored, i: int) -> str:
    """The heatmap over the image as base64 PNG; one colour scale across the request."""
    vmin, vmax = float(scored.maps.min()), float(scored.maps.max())
    buf = io.BytesIO()
    Image.fromarray(overlay(scored.images[i], scored.maps[i], vmin, vmax)).save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _result(scored: Scored, i: int, heatmap: bool) -> dict[str, Any]:
    score, threshold = float(scored.scores[i]), scored.served.threshold
    out: dict[str, Any] = {"score": score,
                           "flagged": None if threshold is None else bool(score >= threshold)}
    if heatmap:
        out["heatmap_png"] = _overlay_png(scored, i)
    return out


def create_app(registry: Registry, cfg: ServeConfig, token: str | None) -> FastAPI:
    """The service for one line's registry; with ``token``, /v1/score needs
    ``Authorization: Bearer <token>``."""
    metrics = Metrics(cfg)
    follower = ChampionFollower(registry, cfg.poll_interval_s, metrics.model_event)
    batcher = Batcher(lambda: follower.current)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        follower.start()
        yield
        follower.stop()
        batcher.stop()

    app = FastAPI(title="exdd serve", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)

    @app.middleware("http")
    async def count(request: Request, call_next: Any) -> Response:
        start = time.perf_counter()
        response = await call_next(request)
        path = request.url.path if request.url.path in KNOWN_PATHS else "other"
        metrics.requests.labels(path, str(response.status_code)).inc()
        metrics.latency.labels(path).observe(time.perf_counter() - start)
        if response.status_code >= 400:
            metrics.errors.labels(str(response.status_code)).inc()
        return response

    @app.exception_handler(ImageError)
    async def bad_image(_: Request, err: ImageError) -> JSONResponse:
        return _error(err.status, str(err))

    @app.exception_handler(RequestValidationError)
    async def bad_query(_: Request, err: RequestValidationError) -> JSONResponse:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        return _error(422, f"{where}: {first.get('msg', 'invalid')}")

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, err: HTTPException) -> JSONResponse:
        return _error(err.status_code, str(err.detail))

    @app.exception_handler(Exception)
    async def internal(_: Request, err: Exception) -> JSONResponse:
        log.error("request failed", exc_info=err)
        return _error(500, "internal error (see the server log)")

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready")
    async def ready() -> JSONResponse:
        served = follower.current
        if served is None:
            return _error(UNAVAILABLE, "no model loaded yet")
        return JSONResponse({"status": "ready", "model_name": served.name,
                             "model_version": served.version, "model_hash": served.model_hash})

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/v1/score")
    async def score(request: Request,
                    heatmap: Literal["png"] | None = Query(None)) -> JSONResponse:
        start = time.perf_counter()
        if token is not None:
            scheme, _, given = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(),
                                                                     token.encode()):
                return _error(UNAUTHORIZED, "missing or wrong bearer token")
        if follower.current is None:
            return _error(UNAVAILABLE, "no model loaded yet")
        uploads, batch = await _uploads(request, cfg)
        for upload in uploads:
            check_image(upload.data, upload.name, cfg.formats, cfg.max_pixels)
        scored = await batcher.score([u.data for u in uploads], keep_images=heatmap is not None)
        metrics.images.inc(len(uploads))
        served = scored.served
        results = [_result(scored, i, heatmap is not None) for i in range(len(uploads))]
        body: dict[str, Any] = {"model_name": served.name, "model_version": served.version,
                                "model_hash": served.model_hash, "threshold": served.threshold}
        if batch:
            body["results"] = [{"image": u.name, **r} for u, r in zip(uploads, results)]
        else:
            body.update(results[0])
        body["latency_ms"] = (time.perf_counter() - start) * 1000.0
        return JSONResponse(body)

    return app
