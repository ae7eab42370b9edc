"""Tiny real line workspaces and candidate models for the gate / publish / rollback /
pipeline tests: real git + DVC repositories, real demo images, real fitted ExDD models.

Sizes are the smallest that still separate good from bad models on the demo surface:
64 x 64 images, 15 training and 16 benchmark images, CPU, small batches.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from exdd.config import Params, load_params
from exdd.data.readers import Sample, load_samples
from exdd.data.demo import make_demo
from exdd.detector.model import ExDD
from exdd.line.workspace import init_workspace

REPO_PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"
TINY: dict[str, Any] = {
    "data": {"image_height": 64, "image_width": 64},
    "demo": {"height": 64, "width": 64, "train_normal": 10, "train_defect": 5,
             "test_normal": 8, "test_defect": 8},
    "model": {"runtime": {"batch_size": 4, "device": "cpu"}, "search": {"use_gpu": False},
              "coreset": {"normal": 0.1, "defect": 0.5}, "banks": {"calibration_patches": 500}},
    "synth": {"count": 4},
    # Good candidates score ~0.98 / 0.94 here, a mislabelled one ~0.83 / 0.61.
    "gate": {"min_image_auroc": 0.9, "min_pixel_auroc": 0.85, "regression_tolerance": 0.05,
             "overlay_images": 4},
    "publish": {"probe_images": 4},
}
TRAIN_SEED = 7  # the candidates' training images differ from the benchmark (demo seed 0)


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        out[key] = merge(base.get(key, {}), value) if isinstance(value, dict) else value
    return out


def write_params(path: Path, extra: dict[str, Any] | None = None) -> Path:
    """The repository's params.yaml with the tiny settings (and ``extra``) on top."""
    raw = merge(yaml.safe_load(REPO_PARAMS.read_text()), merge(TINY, extra or {}))
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def make_line(root: Path, remote_url: str, extra: dict[str, Any] | None = None
              ) -> tuple[Path, Params]:
    """A fresh line workspace under ``root/line`` with demo inbox and benchmark."""
    params_file = write_params(root / "tiny-params.yaml", extra)
    repo = init_workspace(root / "line", params_file, remote_url).root
    return repo, load_params(repo / "params.yaml")


def training_set(root: Path, params: Params) -> list[Sample]:
    out = root / "train-data"
    if not out.exists():
        make_demo(out, params.demo, seed=TRAIN_SEED, defects=params.synth.procedural)
    return load_samples(out, "train")


def fit_candidate(params: Params, train: list[Sample], out: Path, **model: Any) -> Path:
    """A real model; ``model`` overrides top-level ModelConfig fields (the seed)."""
    cfg = params.model.model_copy(update=model)
    ExDD(cfg, params.data).fit(train).save(out)
    return out


def fit_mislabelled(params: Params, train: list[Sample], out: Path) -> Path:
    """A model built from a mislabelled batch: defect images as 'normal', normal images
    as defects covering the whole frame, so the two banks are swapped."""
    normals = [Sample(s.image, None, 0, "train") for s in train if s.label == 1]
    defects = [Sample(s.image, s.image, 1, "train") for s in train if s.label == 0]
    ExDD(params.model, params.data).fit(normals, defects).save(out)
    return out


def tree_digest(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` (relative names), to compare bit for bit."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def probe_bytes(model_dir: Path, probe: dict[str, Any], repo: Path) -> bytes:
    """The model's scores of a version's probe images, as raw float64 bytes."""
    paths = [repo / item["path"] for item in probe["images"]]
    return ExDD.load(model_dir).predict(paths).scores.astype("<f8").tobytes()


def stored_probe_bytes(probe: dict[str, Any]) -> bytes:
    return np.array([float.fromhex(x) for x in probe["scores"]], dtype="<f8").tobytes()
