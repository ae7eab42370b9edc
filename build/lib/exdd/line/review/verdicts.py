"""The verdict store: every operator decision, appended to a SQL table, never updated.

A correction is a new row, so the full history of who decided what, and when, is kept;
the latest row of an image is its verdict. Which verdicts reached the inbox is recorded
beside them, so that the export writes each one once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

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
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.sql import Select

from exdd.config import ReviewConfig, expand_env
from exdd.errors import ConfigError, DataError
from exdd.line.review.auth import AccessDenied

VERDICTS = ("defect", "normal", "unsure")
EXPORTED = ("defect", "normal")  # "unsure" never reaches training


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
    path = (Path(workspace) / cfg.db_file).resolve()
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
