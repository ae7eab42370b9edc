"""``scores.csv``: one row per image of a scoring run, written by ``exdd.inference.batch``
and read by the review queue (``exdd.line.review``).

The row model owns the file name, the column order and the text form of every cell, so
the writer and its readers share one definition: an image that could not be read has
an ``error`` and empty score, flag, overlay and map; ``flag`` and ``threshold`` are empty
when no threshold is known; ``overlay`` and ``map`` (the raw anomaly map, ``.npy``) are
relative to the run folder; ``map_min`` / ``map_max`` are the raw map values the run's
overlays draw as coldest / hottest (one colour scale per run). Runs scored before maps
were stored have no map columns: they read as empty.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from exdd.errors import DataError

SCORES_FILE = "scores.csv"


class ScoreRow(BaseModel):
    """One image of a run: where it is, its score and flag, which model scored it."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    image: str
    score: float | None = None
    flag: bool | None = None
    threshold: float | None = None
    model_version: str = ""
    overlay: str = ""
    map: str = ""
    map_min: float | None = None
    map_max: float | None = None
    error: str = ""

    @field_validator("score", "flag", "threshold", "map_min", "map_max", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("model_version", "overlay", "map", "error", mode="before")
    @classmethod
    def _none_is_empty(cls, value: object) -> object:
        return "" if value is None else str(value)

    def cells(self) -> list[str]:
        """The row as written, in ``SCORE_COLUMNS`` order (scores in full precision)."""
        text = {name: "" if getattr(self, name) is None else repr(float(getattr(self, name)))
                for name in ("score", "map_min", "map_max")}
        text["flag"] = "" if self.flag is None else str(int(self.flag))
        text["threshold"] = "" if self.threshold is None else str(self.threshold)
        return [text.get(name, getattr(self, name)) for name in SCORE_COLUMNS]


SCORE_COLUMNS = tuple(ScoreRow.model_fields)


def scores_text(rows: Iterable[ScoreRow]) -> str:
    """The whole file: header, then one line per row."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(SCORE_COLUMNS)
    writer.writerows(row.cells() for row in rows)
    return out.getvalue()


def read_score_rows(path: Path) -> list[ScoreRow]:
    """Every row of a scores file; a missing key column or a bad cell is a DataError
    naming the file and line."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = {"image", "score"} - set(reader.fieldnames or [])
        if missing:
            raise DataError(f"{path}: scores lack column(s) {sorted(missing)}")
        raw = list(reader)
    rows = []
    for lineno, cells in enumerate(raw, start=2):
        try:
            rows.append(ScoreRow.model_validate(cells))
        except ValidationError as err:
            raise DataError.invalid(f"{path}:{lineno}", "a scores row", err) from None
    return rows
