"""Operator review: the scored-image queue, the append-only verdict store, masks, export.

Each night the line's accepted images are scored by the champion into
``<scores_dir>/<run_id>/scores.csv`` (+ heatmap overlays) in the line workspace. Operators
confirm or correct the flags; every verdict is appended (never updated) to a SQL table, and
the definite ones (defect with a mask, normal) are written into the line's inbox in the
labels format ``exdd validate`` reads, so the next night's run learns from them. The
Streamlit dashboard (``dashboards/``) is a thin layer over this module.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import hashlib
import hmac
import io
import ipaddress
import json
import os
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from PIL import Image
from scipy.spatial import cKDTree
from sqlalchemy import (
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    func,
    insert,
    select,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.sql import Select
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from exdd.config import LineConfig, Params, ReviewConfig, expand_env
from exdd.data.readers import open_image, read_image
from exdd.errors import ConfigError, DataError, ExddError
from exdd.fsutil import write_bytes_atomic
from exdd.inference.scores import SCORES_FILE, read_score_rows
from exdd.storage import is_s3_uri, parse_s3_uri, s3_client
from exdd.inference.overlays import COLORMAP, OVERLAY_ALPHA

VERDICTS = ("defect", "normal", "unsure")
UNREVIEWED = "unreviewed"
STATUSES = (UNREVIEWED, *VERDICTS)
EXPORTED = ("defect", "normal")  # "unsure" never reaches training
LABEL_COLUMNS = ("image", "label", "mask", "replaces")
MASK_SUFFIX = "_GT"  # the project's mask naming (KSDD2 layout)
COLOUR_LEVELS = 256  # colormap samples: the 8-bit resolution overlays are stored in


class AccessDenied(ExddError):
    """No operator identity, or the configured authentication did not accept it."""


# --------------------------------------------------------------------------- lines


def line_config(params: Params, name: str) -> LineConfig:
    """The configured line called ``name``."""
    for line in params.lines:
        if line.name == name:
            return line
    known = ", ".join(line.name for line in params.lines) or "none"
    raise ConfigError(f"params: no line named {name!r} (configured: {known})")


def resolve(workspace: Path, path: str | os.PathLike[str]) -> Path:
    """A config path: absolute as given, relative ones taken from the line workspace."""
    p = Path(path)
    return p if p.is_absolute() else Path(workspace) / p


# --------------------------------------------------------------------------- queue


@dataclass(frozen=True)
class ScoredImage:
    """One row of a scoring run: what the champion said about one line image."""

    line: str
    run_id: str
    scored_at: datetime
    image: str  # as written in scores.csv (workspace-relative): the verdict key
    image_path: Path
    overlay_path: Path | None
    score: float
    flag: bool | None
    threshold: float | None
    model_version: str


def read_outcome(workspace: Path, cfg: ReviewConfig, run_id: str) -> dict | None:
    """The nightly run's outcome JSON, or None when that run wrote none."""
    path = resolve(workspace, cfg.outcomes_dir) / f"{run_id}.json"
    if not path.is_file():
        return None
    try:
        outcome = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(outcome, dict):
        raise DataError(f"{path}: run outcome must be a JSON object")
    return outcome


def list_outcomes(workspace: Path, cfg: ReviewConfig) -> list[dict]:
    """Every nightly run outcome of the workspace, newest first."""
    folder = resolve(workspace, cfg.outcomes_dir)
    if not folder.is_dir():
        return []
    outcomes = [read_outcome(workspace, cfg, p.stem) for p in folder.glob("*.json")]
    return sorted((o for o in outcomes if o), key=lambda o: str(o.get("finished") or ""),
                  reverse=True)


def _parse_time(value: object, fallback: datetime) -> datetime:
    if not value:
        return fallback
    try:
        t = datetime.fromisoformat(str(value))
    except ValueError:
        return fallback
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def read_scores(workspace: Path, cfg: ReviewConfig, line: str, run_id: str) -> list[ScoredImage]:
    """One run's scores.csv (written by ``exdd.pipeline.nightly.score_images``; overlay paths are
    relative to the run folder); the run's time is its outcome's ``finished``, else the
    file's."""
    run_dir = resolve(workspace, cfg.scores_dir) / run_id
    path = run_dir / SCORES_FILE
    outcome = read_outcome(workspace, cfg, run_id) or {}
    mtime = datetime.fromtimestamp(path.stat().st_mtime, UTC)
    scored_at = _parse_time(outcome.get("finished"), mtime)
    items = []
    for row in read_score_rows(path):
        if row.error or row.score is None:
            continue  # an image the run could not read: nothing to review
        overlay = row.overlay.strip()
        items.append(ScoredImage(
            line=line, run_id=run_id, scored_at=scored_at, image=row.image,
            image_path=resolve(workspace, row.image),
            overlay_path=run_dir / overlay if overlay else None, score=row.score,
            flag=row.flag, threshold=row.threshold, model_version=row.model_version,
        ))
    return items


def load_queue(workspace: Path, cfg: ReviewConfig, line: str) -> list[ScoredImage]:
    """Images of the ``recent_runs`` latest scoring runs, most suspicious first.

    An image scored by several runs appears once, as the latest run saw it.
    """
    root = resolve(workspace, cfg.scores_dir)
    runs = [p.name for p in root.iterdir() if (p / SCORES_FILE).is_file()] if root.is_dir() else []
    per_run = [read_scores(workspace, cfg, line, run_id) for run_id in runs]
    per_run = [items for items in per_run if items]
    per_run.sort(key=lambda items: (items[0].scored_at, items[0].run_id), reverse=True)
    latest: dict[str, ScoredImage] = {}
    for items in per_run[: cfg.recent_runs]:
        for item in items:
            latest.setdefault(item.image, item)
    return sorted(latest.values(), key=lambda i: (-i.score, i.image))


def filter_queue(items: Iterable[ScoredImage], statuses: Mapping[str, str],
                 wanted: Sequence[str] = STATUSES, since: date | None = None,
                 until: date | None = None) -> list[ScoredImage]:
    """Keep items whose review status (``statuses[image]``, default unreviewed) is wanted
    and whose scoring date lies in [since, until]."""
    return [i for i in items
            if statuses.get(i.image, UNREVIEWED) in wanted
            and (since is None or i.scored_at.date() >= since)
            and (until is None or i.scored_at.date() <= until)]


def judged_threshold(item: ScoredImage, override: float | None = None) -> float | None:
    """The threshold an image is judged by: ``override`` when the operator set one for
    every model, else that of the model version that scored it (None: it had none)."""
    return item.threshold if override is None else override


def is_flagged(item: ScoredImage, override: float | None = None) -> bool | None:
    """score >= threshold, as predict does; None when no threshold is known for the row."""
    threshold = judged_threshold(item, override)
    return None if threshold is None else item.score >= threshold


def count_flagged(items: Iterable[ScoredImage], override: float | None = None) -> int:
    """How many images are flagged, each by its own model's threshold unless ``override``."""
    return sum(1 for i in items if is_flagged(i, override))


def default_threshold(items: Sequence[ScoredImage], source: str,
                      champion_threshold: float | None) -> float | None:
    """The one-for-all slider's start: the latest scoring run's threshold or the
    champion's, whichever the config prefers and exists (the other otherwise)."""
    known = [i for i in items if i.threshold is not None]
    latest = max(known, key=lambda i: (i.scored_at, i.run_id), default=None)
    run_threshold = latest.threshold if latest is not None else None
    order = (run_threshold, champion_threshold) if source == "scores" else (
        champion_threshold, run_threshold)
    return next((t for t in order if t is not None), None)


def model_versions(items: Iterable[ScoredImage]) -> list[str]:
    """The model versions that scored the queue, in numeric order."""
    found = {i.model_version for i in items}
    return sorted(found, key=lambda v: (not v.isdigit(), int(v) if v.isdigit() else 0, v))


def read_audit(workspace: Path, params: Params) -> list[dict]:
    """The line's publish / rollback audit log (JSON lines, exdd.line.publish), newest first."""
    path = resolve(workspace, params.publish.audit_log)
    if not path.is_file():
        return []
    entries = []
    for lineno, text in enumerate(path.read_text().splitlines(), start=1):
        if text.strip():
            try:
                entries.append(json.loads(text))
            except json.JSONDecodeError as err:
                raise DataError(f"{path}:{lineno}: not a JSON line ({err})") from None
    return entries[::-1]


# --------------------------------------------------------------------------- verdicts


@dataclass(frozen=True)
class Verdict:
    """One operator decision; later rows for the same image supersede earlier ones."""

    id: int
    line: str
    image: str
    verdict: str
    note: str
    mask_path: str | None
    operator: str
    created_at: datetime
    model_version: str


_metadata = MetaData()
VERDICTS_TABLE = Table(
    "verdicts", _metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("line", String(64), nullable=False),
    Column("image", String(1024), nullable=False),
    Column("verdict", String(16), nullable=False),
    Column("note", Text, nullable=False),
    Column("mask_path", String(1024)),
    Column("operator", String(256), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("model_version", String(64), nullable=False),
    CheckConstraint(f"verdict IN ({', '.join(repr(v) for v in VERDICTS)})",
                    name="ck_verdict"),
    Index("ix_verdicts_line_image", "line", "image"),
)
EXPORTS_TABLE = Table(
    "exports", _metadata,
    Column("verdict_id", Integer, ForeignKey("verdicts.id"), primary_key=True),
    Column("inbox_image", String(1024), nullable=False),
    Column("exported_at", DateTime(timezone=True), nullable=False),
)


def store_url(cfg: ReviewConfig, workspace: Path) -> str:
    """``cfg.db_url`` if set (``${ENV_VAR}`` from the environment), else the sqlite file
    ``cfg.db_file`` in the workspace."""
    if cfg.db_url:
        return expand_env(cfg.db_url, "review.db_url")
    path = resolve(workspace, cfg.db_file).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def _as_verdict(row: Mapping) -> Verdict:
    created = row["created_at"]
    return Verdict(id=row["id"], line=row["line"], image=row["image"], verdict=row["verdict"],
                   note=row["note"], mask_path=row["mask_path"], operator=row["operator"],
                   created_at=created if created.tzinfo else created.replace(tzinfo=UTC),
                   model_version=row["model_version"])


class VerdictStore:
    """Append-only verdicts (and which of them were exported) in any SQLAlchemy database.

    There is deliberately no update or delete: a correction is a new row, so the full
    history of who decided what, and when, is kept.
    """

    def __init__(self, url: str) -> None:
        shown = make_url(url).render_as_string(hide_password=True)
        try:
            self.engine: Engine = create_engine(url)
            _metadata.create_all(self.engine)
        except (ArgumentError, SQLAlchemyError, ImportError) as err:
            raise ConfigError(f"review.db_url {shown}: cannot open the verdict store "
                              f"({type(err).__name__}: {str(err).splitlines()[0]})") from None

    @classmethod
    def for_workspace(cls, cfg: ReviewConfig, workspace: Path) -> "VerdictStore":
        return cls(store_url(cfg, workspace))

    def record(self, line: str, image: str, verdict: str, operator: str, note: str = "",
               mask_path: str | None = None, model_version: str = "") -> Verdict:
        """Append one verdict; the operator's name is required."""
        if verdict not in VERDICTS:
            raise DataError(f"verdict must be one of {VERDICTS}, got {verdict!r}")
        if not operator.strip():
            raise AccessDenied("an operator name is required to record a verdict")
        if mask_path and verdict != "defect":
            raise DataError(f"{image}: only a defect verdict can carry a mask")
        values = dict(line=line, image=image, verdict=verdict, note=note.strip(),
                      mask_path=mask_path or None, operator=operator.strip(),
                      created_at=datetime.now(UTC), model_version=model_version)
        with self.engine.begin() as conn:
            new_id = conn.execute(insert(VERDICTS_TABLE).values(**values)).inserted_primary_key[0]
        return Verdict(id=int(new_id), **values)

    def _latest_ids(self, line: str) -> Select:
        return (select(func.max(VERDICTS_TABLE.c.id))
                .where(VERDICTS_TABLE.c.line == line)
                .group_by(VERDICTS_TABLE.c.image))

    def latest(self, line: str) -> dict[str, Verdict]:
        """The current verdict of every reviewed image of the line."""
        query = select(VERDICTS_TABLE).where(VERDICTS_TABLE.c.id.in_(self._latest_ids(line)))
        with self.engine.connect() as conn:
            return {v.image: v for v in map(_as_verdict, conn.execute(query).mappings())}

    def history(self, line: str, image: str | None = None) -> list[Verdict]:
        """All verdicts of the line (or of one image), newest first."""
        query = select(VERDICTS_TABLE).where(VERDICTS_TABLE.c.line == line)
        if image is not None:
            query = query.where(VERDICTS_TABLE.c.image == image)
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(VERDICTS_TABLE.c.id.desc())).mappings()
            return [_as_verdict(r) for r in rows]

    def pending_exports(self, line: str) -> list[Verdict]:
        """Current defect/normal verdicts not yet written to the inbox, oldest first."""
        exported = select(EXPORTS_TABLE.c.verdict_id)
        query = (select(VERDICTS_TABLE)
                 .where(VERDICTS_TABLE.c.id.in_(self._latest_ids(line)),
                        VERDICTS_TABLE.c.verdict.in_(EXPORTED),
                        VERDICTS_TABLE.c.id.not_in(exported))
                 .order_by(VERDICTS_TABLE.c.id))
        with self.engine.connect() as conn:
            return [_as_verdict(r) for r in conn.execute(query).mappings()]

    def mark_exported(self, verdict: Verdict, inbox_image: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(insert(EXPORTS_TABLE).values(
                verdict_id=verdict.id, inbox_image=inbox_image, exported_at=datetime.now(UTC)))


# --------------------------------------------------------------------------- masks


def heat_from_overlay(overlay_rgb: np.ndarray, image_rgb: np.ndarray) -> np.ndarray:
    """Recover the normalised heatmap (0..1) from an overlay and the image under it.

    Overlays are ``(1 - a) * image + a * colormap(heat)`` (exdd.inference.overlays); removing the
    image and looking the colour up in the colormap inverts that up to 8-bit rounding, so
    the nightly run needs to store no raw maps for operators to accept a region.
    """
    over = np.asarray(overlay_rgb, dtype=np.float32)[..., :3] / 255.0
    image = np.asarray(image_rgb, dtype=np.float32)
    if over.shape != image.shape:
        raise DataError(f"overlay shape {over.shape} does not match image shape {image.shape}")
    colours = (over - (1.0 - OVERLAY_ALPHA) * image) / OVERLAY_ALPHA
    levels = np.linspace(0.0, 1.0, COLOUR_LEVELS, dtype=np.float32)
    table = colormaps[COLORMAP](levels)[:, :3]
    _, nearest = cKDTree(table).query(colours.reshape(-1, 3))
    return levels[nearest].reshape(over.shape[:2])


def mask_from_overlay(overlay_path: Path, image_path: Path, level: float) -> np.ndarray:
    """The heatmap region at or above ``level`` (0..1 of the overlay's colour scale), as a
    boolean mask of the image's own size."""
    overlay = np.asarray(open_image(overlay_path, str(overlay_path)).convert("RGB"))
    h, w = overlay.shape[:2]
    heat = heat_from_overlay(overlay, read_image(image_path, h, w))
    native = open_image(image_path, str(image_path)).size
    heat = np.asarray(Image.fromarray(heat, mode="F").resize(native, Image.BILINEAR))
    return heat >= level


def mask_from_upload(data: bytes, image_path: Path, threshold: int, name: str = "upload"
                     ) -> np.ndarray:
    """An operator-drawn mask file (any image, white = defect) of the image's own size."""
    mask = open_image(data, name)
    size = open_image(image_path, str(image_path)).size
    if mask.size != size:
        raise DataError(f"{name}: mask size {mask.size[0]}x{mask.size[1]} does not match "
                        f"image {image_path.name} size {size[0]}x{size[1]}")
    return np.asarray(mask.convert("L")) > threshold


def save_mask(mask: np.ndarray, path: Path) -> Path:
    """A binary mask as a 0/255 PNG, atomically; an empty mask is refused."""
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        raise DataError(f"{path}: the mask is empty: no defect pixels selected")
    buf = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8) * 255, mode="L").save(buf, format="PNG")
    write_bytes_atomic(path, buf.getvalue())
    return path


def new_mask_path(cfg: ReviewConfig, image: str) -> str:
    """A fresh workspace-relative path for an operator mask (never overwrites an earlier one)."""
    return str(Path(cfg.masks_dir) / f"{Path(image).stem}-{uuid.uuid4().hex[:12]}.png")


# --------------------------------------------------------------------------- export


@dataclass(frozen=True)
class ExportResult:
    exported: list[str]  # inbox image names written
    held: list[tuple[str, str]]  # (image, why it is not exported yet)


def inbox_name(image: str) -> str:
    """Unique, stable inbox file name: nightly folders reuse stems, so add a path hash."""
    p = Path(image)
    digest = hashlib.sha256(image.encode("utf-8")).hexdigest()[:10]
    return f"review-{p.stem}-{digest}{p.suffix.lower()}"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class _FolderInbox:
    """A local inbox folder: atomic writes (temp file + rename)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def read(self, name: str) -> bytes | None:
        path = self.root / name
        return path.read_bytes() if path.is_file() else None

    def write(self, name: str, data: bytes) -> None:
        write_bytes_atomic(self.root / name, data)


class _S3Inbox:
    """An ``s3://bucket/prefix`` inbox: a single PUT is atomic, readers never see half."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.bucket, self.prefix = parse_s3_uri(uri)
        self.client = s3_client()

    def read(self, name: str) -> bytes | None:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self.prefix + name)[
                "Body"].read()
        except self.client.exceptions.NoSuchKey:
            return None
        except Exception as err:  # noqa: BLE001 - botocore raises many types
            raise DataError(f"{self.uri.rstrip('/')}/{name}: cannot read "
                            f"({type(err).__name__})") from None

    def write(self, name: str, data: bytes) -> None:
        try:
            self.client.put_object(Bucket=self.bucket, Key=self.prefix + name, Body=data)
        except Exception as err:  # noqa: BLE001
            raise DataError(f"{self.uri.rstrip('/')}/{name}: cannot write "
                            f"({type(err).__name__})") from None


def _merge_labels(existing: bytes | None, rows: Sequence[dict[str, str]], name: str) -> bytes:
    """The labels sidecar with ``rows`` added or replaced (keyed by image); rows and
    columns another writer put there are kept."""
    fields: list[str] = list(LABEL_COLUMNS)
    kept: list[dict[str, str]] = []
    if existing:
        reader = csv.DictReader(io.StringIO(existing.decode("utf-8-sig")))
        if "image" not in (reader.fieldnames or []):
            raise DataError(f"{name}: labels file lacks the 'image' column")
        fields = list(reader.fieldnames or []) + [
            c for c in LABEL_COLUMNS if c not in (reader.fieldnames or [])]
        kept = list(reader)
    by_image = {r["image"]: r for r in kept}
    for row in rows:
        by_image[row["image"]] = {**by_image.get(row["image"], {}), **row}
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(by_image.values())
    return buf.getvalue().encode("utf-8")


def export_pending(store: VerdictStore, params: Params, line: LineConfig,
                   workspace: Path) -> ExportResult:
    """Write every pending defect/normal verdict of ``line`` into its inbox (a folder or
    ``s3://``): the image, its 0/255 mask (``<name>_GT.png``), then the row of the labels
    sidecar, each written whole, so a sidecar row never names a missing file. A defect
    without a mask is held back (validation would quarantine it); unsure verdicts are
    never exported. A re-run after a crash rewrites the same files: export is idempotent.

    ``replaces`` names the data-set file (relative to the data set, as in its manifest) an
    image already is, when it is one: a verdict on a night's accepted image is a relabel.
    """
    inbox = (_S3Inbox(line.inbox) if is_s3_uri(line.inbox)
             else _FolderInbox(resolve(workspace, line.inbox)))
    labels = params.intake.labels_file
    dataset = resolve(workspace, line.dataset).resolve()
    exported: list[str] = []
    held: list[tuple[str, str]] = []
    with _locked(resolve(workspace, params.review.export_lock)):
        for verdict in store.pending_exports(line.name):
            if verdict.verdict == "defect" and not verdict.mask_path:
                held.append((verdict.image, "defect without a mask"))
                continue
            source = resolve(workspace, verdict.image)
            if not source.is_file():
                held.append((verdict.image, f"image {source} is missing"))
                continue
            name = inbox_name(verdict.image)
            inbox.write(name, source.read_bytes())
            mask = ""
            if verdict.verdict == "defect":
                mask = f"{Path(name).stem}{MASK_SUFFIX}.png"
                inbox.write(mask, resolve(workspace, verdict.mask_path).read_bytes())
            original = source.resolve()
            replaces = (original.relative_to(dataset).as_posix()
                        if original.is_relative_to(dataset) else "")
            row = {"image": name, "label": verdict.verdict, "mask": mask, "replaces": replaces}
            inbox.write(labels, _merge_labels(inbox.read(labels), [row], f"{line.inbox}/{labels}"))
            store.mark_exported(verdict, name)
            exported.append(name)
    return ExportResult(exported, held)


# --------------------------------------------------------------------------- access


def _trusted_proxy(cfg: ReviewConfig, lowered: Mapping[str, str], peer: str | None,
                   environ: Mapping[str, str]) -> None:
    """AccessDenied unless the request comes from the authenticating proxy: a configured
    proxy address and/or the proxy's shared secret (at least one must be configured)."""
    if not cfg.trusted_proxies and not cfg.proxy_secret_env:
        raise ConfigError("review.auth is 'header' but neither review.trusted_proxies nor "
                          "review.proxy_secret_env is set: anyone could send the "
                          f"{cfg.auth_header} header")
    if cfg.trusted_proxies:
        try:
            address = ipaddress.ip_address((peer or "").strip())
        except ValueError:
            address = None
        if address is None or not any(
                address in ipaddress.ip_network(n, strict=False) for n in cfg.trusted_proxies):
            raise AccessDenied(f"request from {peer or 'an unknown address'}, not from a "
                               f"trusted proxy (review.trusted_proxies): {cfg.auth_header} "
                               "is ignored")
    if cfg.proxy_secret_env:
        expected = environ.get(cfg.proxy_secret_env)
        if not expected:
            raise ConfigError(f"review.proxy_secret_env: the environment variable "
                              f"{cfg.proxy_secret_env} is not set")
        sent = lowered.get(cfg.proxy_secret_header.lower()) or ""
        if not hmac.compare_digest(sent.encode(), expected.encode()):
            raise AccessDenied(f"the proxy's {cfg.proxy_secret_header} is missing or wrong: "
                               f"{cfg.auth_header} is ignored")


def authorize(cfg: ReviewConfig, operator: str, headers: Mapping[str, str] | None = None,
              secret: str | None = None, environ: Mapping[str, str] = os.environ,
              peer: str | None = None) -> str:
    """The operator identity every action is recorded under, or AccessDenied.

    ``none``: the typed name. ``secret``: the typed name, once the shared secret (read
    from the env var named in the config) matches. ``header``: the identity the reverse
    proxy put in the configured header, trusted only from a configured proxy address
    (``peer`` is the connecting address) and/or with the proxy's shared secret; a typed
    name cannot override it.
    """
    if cfg.auth == "header":
        lowered = {k.lower(): v for k, v in (headers or {}).items()}
        _trusted_proxy(cfg, lowered, peer, environ)
        who = (lowered.get(cfg.auth_header.lower()) or "").strip()
        if not who:
            raise AccessDenied(f"header {cfg.auth_header} missing: open the dashboard "
                               "through the authenticating proxy")
        return who
    who = operator.strip()
    if not who:
        raise AccessDenied("enter your operator name first")
    if cfg.auth == "secret":
        expected = environ.get(cfg.secret_env)
        if not expected:
            raise ConfigError(f"review.auth is 'secret' but the environment variable "
                              f"{cfg.secret_env} is not set")
        if not secret or not hmac.compare_digest(secret.encode(), expected.encode()):
            raise AccessDenied("the access key is wrong")
    return who
