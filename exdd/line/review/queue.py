"""The review queue: what the champion said about the line's images, most suspicious first.

Each scoring run of the line leaves ``<scores_dir>/<run_id>/`` (``exdd.inference.batch``:
scores.csv, overlays, anomaly maps) and, for nightly runs, an outcome JSON in
``<outcomes_dir>``. The queue holds the rows of the ``recent_runs`` latest runs, each image
once (as the latest run saw it), judged by the threshold of the model that scored it unless
the operator sets one for all.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

from exdd.config import ReviewConfig
from exdd.errors import DataError
from exdd.inference.scores import SCORES_FILE, ScoreRow, read_score_rows
from exdd.line.outcome import Outcome
from exdd.line.review.verdicts import VERDICTS

UNREVIEWED = "unreviewed"
STATUSES = (UNREVIEWED, *VERDICTS)


@dataclass(frozen=True)
class ScoredImage:
    """One row of a scoring run: what the champion said about one line image."""

    line: str
    run_id: str
    scored_at: datetime
    image: str  # as written in scores.csv (workspace-relative): the verdict key
    image_path: Path
    overlay_path: Path | None
    map_path: Path | None  # the raw anomaly map (None: scored before maps were stored)
    map_scale: tuple[float, float] | None  # map values the overlay draws coldest / hottest
    score: float
    flag: bool | None
    threshold: float | None
    model_version: str


def read_outcome(workspace: Path, cfg: ReviewConfig, run_id: str) -> dict | None:
    """The nightly run's outcome JSON, or None when that run wrote none."""
    path = Outcome.path(Path(workspace) / cfg.outcomes_dir, run_id)
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
    folder = Path(workspace) / cfg.outcomes_dir
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


def _stored_map(run_dir: Path, row: ScoreRow) -> tuple[Path | None,
                                                       tuple[float, float] | None]:
    """The row's anomaly map and its colour scale; none for runs scored before maps were
    stored."""
    name = row.map.strip()
    if not name or row.map_min is None or row.map_max is None:
        return None, None
    return run_dir / name, (row.map_min, row.map_max)


def read_scores(workspace: Path, cfg: ReviewConfig, line: str, run_id: str) -> list[ScoredImage]:
    """One run's scores.csv (written by ``exdd.inference.batch.write_predictions``; overlay
    and map paths are relative to the run folder); the run's time is its outcome's
    ``finished``, else the file's."""
    run_dir = Path(workspace) / cfg.scores_dir / run_id
    path = run_dir / SCORES_FILE
    outcome = read_outcome(workspace, cfg, run_id) or {}
    mtime = datetime.fromtimestamp(path.stat().st_mtime, UTC)
    scored_at = _parse_time(outcome.get("finished"), mtime)
    items = []
    for row in read_score_rows(path):
        if row.error or row.score is None:
            continue  # an image the run could not read: nothing to review
        map_path, map_scale = _stored_map(run_dir, row)
        overlay = row.overlay.strip()
        items.append(ScoredImage(
            line=line, run_id=run_id, scored_at=scored_at, image=row.image,
            image_path=Path(workspace) / row.image,
            overlay_path=run_dir / overlay if overlay else None, map_path=map_path,
            map_scale=map_scale, score=row.score, flag=row.flag, threshold=row.threshold,
            model_version=row.model_version,
        ))
    return items


def load_queue(workspace: Path, cfg: ReviewConfig, line: str) -> list[ScoredImage]:
    """Images of the ``recent_runs`` latest scoring runs, most suspicious first.

    An image scored by several runs appears once, as the latest run saw it.
    """
    root = Path(workspace) / cfg.scores_dir
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
