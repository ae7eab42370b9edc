"""The intake's size policy on real image files: what real lines send gets through.

Lines deliver many sizes (magnetic-tile: 1,225 among 1,344 images) and change cameras;
the detector resizes every image, so the default policy accepts any size it can use and
still quarantines tiny frames and far-off aspect ratios, and a night at a new size is a
drift event, not a mass quarantine. ``exact`` and ``tolerance`` remain for lines that want
them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from line_helpers import distinct_sizes
from test_intake import H, W, save, seed_dataset, texture

from exdd.config import IntakeConfig
from exdd.data.readers import load_samples
from exdd.line.intake import validate_inbox


def deliver(inbox: Path, sizes: list[tuple[int, int]], prefix: str) -> list[str]:
    """One image per (width, height), the line's texture; returns their keys."""
    keys = []
    for i, (w, h) in enumerate(sizes):
        keys.append(f"{prefix}{i:02d}.png")
        save(inbox / keys[-1], texture(1000 + i, h=h, w=w))
    return keys


def run(tmp_path: Path, name: str, sizes: list[tuple[int, int]], **intake: object):
    """A seeded data set (W x H images), one night of ``sizes`` under ``intake`` settings."""
    ds, inbox = tmp_path / f"{name}-ds", tmp_path / f"{name}-inbox"
    seed_dataset(ds)
    keys = deliver(inbox, sizes, "night_")
    cfg = IntakeConfig(max_failed_fraction=1.0, **intake)
    result = validate_inbox(str(inbox), ds, tmp_path / f"{name}-report", cfg)
    report = json.loads((tmp_path / f"{name}-report" / "intake.json").read_text())
    failed = {f["path"]: {c["column"] for c in f["failed"]} for f in report["files"]}
    return result, report, {k: failed[k] for k in keys}


def test_varied_sizes_are_accepted_by_default_and_not_by_exact(tmp_path: Path) -> None:
    sizes = distinct_sizes(12, base=(W, H), spread=0.4)
    result, report, failed = run(tmp_path, "aspect", sizes)
    assert all(cols == set() for cols in failed.values()), failed
    assert result.n_accepted == len(sizes) and result.passed and result.drift == []
    assert report["bounds"]["size"]["policy"] == "aspect"

    _, _, exact = run(tmp_path, "exact", sizes, size_policy="exact")
    assert all(cols & {"width", "height"} for cols in exact.values())  # none is W x H

    tol = 0.25
    _, report, tolerance = run(tmp_path, "tolerance", sizes, size_policy="tolerance",
                               size_tolerance=tol)
    for (w, h), cols in zip(sizes, tolerance.values()):
        inside = abs(w - W) <= tol * W and abs(h - H) <= tol * H
        assert (cols == set()) == inside, (w, h, cols)
    assert report["bounds"]["size"]["width"] == pytest.approx([W * (1 - tol), W * (1 + tol)])


def test_tiny_and_far_aspect_are_quarantined_whatever_the_policy_allows(tmp_path: Path) -> None:
    sizes = [(W, H), (10, 8), (W * 8, H // 2), (W + 3, H - 2)]
    _, report, failed = run(tmp_path, "aspect", sizes)
    assert list(failed.values()) == [set(), {"width", "height"}, {"aspect"}, set()]
    low, high = report["bounds"]["size"]["aspect"]
    assert low == pytest.approx(W / H / 4) and high == pytest.approx(W / H * 4)

    _, _, failed = run(tmp_path, "any", sizes, size_policy="any")
    assert list(failed.values()) == [set(), {"width", "height"}, set(), set()]

    _, _, failed = run(tmp_path, "fixed", sizes, aspect_range=(1.4, 1.6))
    assert [bool(cols) for cols in failed.values()] == [False, True, True, True]


def test_camera_change_night_is_a_drift_event_not_a_mass_quarantine(tmp_path: Path) -> None:
    """The data set holds W x H images; tonight the camera delivers twice the resolution."""
    new_camera = [(2 * W + d, 2 * H + d) for d in range(6)]
    result, report, failed = run(tmp_path, "aspect", new_camera)
    assert all(cols == set() for cols in failed.values())
    assert result.n_accepted == len(new_camera) and result.passed
    (event,) = result.drift
    assert event["kind"] == "size" and event["dataset_median"] == [W, H]
    assert event["batch_median"] == [2 * W + 2.5, 2 * H + 2.5]
    assert event["change"] > IntakeConfig().drift_tolerance and "camera" in event["message"]
    assert report["drift"] == result.drift
    ds = tmp_path / "aspect-ds"
    assert len(load_samples(ds / "manifest.csv")) == 3 + len(new_camera)

    # a line that asked for the tolerance policy quarantines that night, and is told why
    result, _, failed = run(tmp_path, "tolerance", new_camera, size_policy="tolerance")
    assert all(cols == {"width", "height"} for cols in failed.values())
    assert result.n_accepted == 0 and result.n_quarantined == len(new_camera) and result.drift

    # the same sizes as the data set: no drift
    result, _, _ = run(tmp_path, "steady", [(W, H), (W + 2, H + 1), (W - 2, H)])
    assert result.drift == []
