"""A real, tiny line workspace for the dashboard tests, built with the real library.

git + DVC workspace (``init_workspace``), two tiny ExDD models fitted on generated demo
data, each gated and published (MLflow sqlite registry, DVC local remote, git tags), then
a night's images scored by the champion with the nightly run's own scoring step
(``exdd.pipeline.nightly.score_images``) and the run's outcome JSON beside them.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import yaml

from exdd.config import load_params
from exdd.data.readers import load_samples
from exdd.data.demo import make_demo
from exdd.line.gate import run_gate
from exdd.detector.model import ExDD
from exdd.pipeline.nightly import open_run, score_images
from exdd.line.publish import publish
from exdd.line.workspace import init_workspace

LINE = "demo"
RUN_ID = "scheduled__2025-03-02T02:00:00+00:00"
NIGHT_IMAGES = 6
TINY = {
    "data": {"image_height": 64, "image_width": 64},
    "demo": {"height": 64, "width": 48, "train_normal": 6, "train_defect": 2,
             "test_normal": 3, "test_defect": 3},
    "model": {"runtime": {"batch_size": 4, "device": "cpu"}, "search": {"use_gpu": False},
              "banks": {"calibration_patches": 100}},
    "gate": {"min_image_auroc": 0.0, "min_pixel_auroc": 0.0, "regression_tolerance": 1.0,
             "overlay_images": 2},
    "publish": {"line": LINE, "probe_images": 2},
}


@dataclass(frozen=True)
class LineFixture:
    params_file: Path  # the dashboard's params.yaml (lines + review)
    workspace: Path
    night: list[str]  # workspace-relative paths of the scored images


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(base.get(key, {}), value) if isinstance(value, dict) else value
    return out


def _fit(cfg_file: Path, train: Path, out: Path, seed: int) -> Path:
    params = load_params(cfg_file)
    model_cfg = params.model.model_copy(update={"seed": seed})
    ExDD(model_cfg, params.data).fit(load_samples(train, "train")).save(out)
    return out


def build_line(root: Path, publish_models: bool = True) -> LineFixture:
    """The workspace, and the params.yaml a dashboard for its line would read. Without
    ``publish_models``: a new line's workspace, nothing trained, scored or published."""
    raw = _merge(yaml.safe_load((Path(__file__).parents[1] / "params.yaml").read_text()), TINY)
    raw.pop("lines", None)
    dash = dict(raw, lines=[{"name": LINE, "workspace": "ws"}])  # relative to this file
    params_file = root / "params.yaml"  # written last: it marks a finished build
    ws = root / "ws"
    if not publish_models:
        ws.mkdir(parents=True)
        (ws / "params.yaml").write_text(yaml.safe_dump(raw))
        params_file.write_text(yaml.safe_dump(dash))
        return LineFixture(params_file, ws, [])

    ws_params = root / "ws-params.yaml"
    ws_params.write_text(yaml.safe_dump(raw))
    init_workspace(ws, ws_params, remote_url=str(root / "remote"))
    params = load_params(ws / "params.yaml")
    demo = make_demo(root / "demo", params.demo, defects=params.synth.procedural)
    night_dir = ws / "data" / "dataset" / "night"
    night_dir.mkdir(parents=True)
    images = sorted(p for p in (demo / "test").glob("*.png") if not p.stem.endswith("_GT"))
    night = []
    for src in images[:NIGHT_IMAGES]:
        shutil.copyfile(src, night_dir / src.name)
        night.append(f"data/dataset/night/{src.name}")
    for seed in (0, 1):
        cand = _fit(ws / "params.yaml", demo, root / f"cand{seed}", seed)
        run_gate(cand, ws / params.gate.benchmark, params, ws)
        publish(cand, params, ws)
    staged = root / "params.staged.yaml"
    staged.write_text(yaml.safe_dump(dash))
    scored = score_images(open_run(staged, LINE, RUN_ID), [ws / image for image in night])
    outcome = ws / params.review.outcomes_dir / f"{RUN_ID}.json"
    outcome.parent.mkdir(parents=True, exist_ok=True)
    outcome.write_text(json.dumps({
        "run_id": RUN_ID, "line": LINE, "started": "2025-03-02T02:00:00+00:00",
        "finished": "2025-03-02T02:20:00+00:00", "n_total": NIGHT_IMAGES,
        "n_accepted": NIGHT_IMAGES, "n_quarantined": 0, "metrics": {},
        "gate": {"passed": True, "reasons": ["PASS fixture"]},
        "champion_version": scored.model_version, "new_champion": True,
        "scores_dir": scored.scores_dir}))
    os.replace(staged, params_file)
    return LineFixture(params_file, ws, night)


def line_copy(base: Path, dest: Path, publish_models: bool = True) -> LineFixture:
    """A private copy of a line built once per test session under ``base`` (tests change
    their workspace: verdicts, exports, rollbacks)."""
    template = base / ("review-line" if publish_models else "review-line-empty")
    if not (template / "params.yaml").is_file():
        shutil.rmtree(template, ignore_errors=True)
        template.mkdir(parents=True)
        build_line(template, publish_models)
    shutil.copytree(template, dest, symlinks=True)
    night = sorted(str(p.relative_to(dest / "ws"))
                   for p in (dest / "ws" / "data" / "dataset" / "night").glob("*.png"))
    return LineFixture(dest / "params.yaml", dest / "ws", night)
