"""Writing a synthetic defect data set, and regenerating any one of its samples.

A synthetic set is a KSDD2-layout folder with everything under ``train/`` (every sample is a
defect with its mask, so ``load_samples(out)`` feeds ``ExDD.fit(..., synthetic=...)``) plus
``provenance.jsonl``. Sources are drawn by one seeded generator: a random defect-free
training image per sample, and for the SDXL backend a random real training defect mask;
prompts are split evenly over the count, in order.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image
from tqdm import tqdm

from exdd.config import DataConfig, ProceduralConfig, SynthConfig
from exdd.data.readers import load_samples
from exdd.errors import ConfigError, DataError
from exdd.fsutil import atomic_dir, sha256_file, write_text_atomic
from exdd.data.synth.procedural import ProceduralBackend
from exdd.data.synth.provenance import PROVENANCE_FILE, Provenance, dumps
from exdd.data.synth.sdxl import SDXLBackend

_CLASSES = {"procedural": ProceduralBackend, "sdxl": SDXLBackend}
BACKENDS = tuple(_CLASSES)
# Per-sample seeds are drawn below this bound (fits torch and numpy seeding alike).
_SEED_BOUND = 2**31 - 1


class Backend(Protocol):
    """A synthetic-defect generator.

    ``needs_masks``: it draws on real defect masks; ``prompted``: it takes a text prompt.
    """

    name: str
    model_id: str | None
    needs_masks: bool
    prompted: bool

    def params(self) -> dict[str, Any]: ...

    def generate(self, source: Path, source_mask: Path | None, prompt: str | None,
                 seed: int) -> tuple[Image.Image, Image.Image, dict[str, Any]]: ...


@dataclass(frozen=True)
class Job:
    """What one sample is made from."""

    source_image: Path
    source_mask: Path | None
    prompt: str | None
    seed: int


def _sources(data: Path, needs_masks: bool) -> tuple[list[Path], list[Path]]:
    """Defect-free training images and real training defect masks of ``data``."""
    train = load_samples(data, "train")
    normals = [s.image for s in train if s.label == 0]
    masks = [s.mask for s in train if s.label == 1 and s.mask is not None]
    if not normals:
        raise DataError(f"{data}: no defect-free training images to draw defects on")
    if needs_masks and not masks:
        raise DataError(f"{data}: no ground-truth defect masks in the train split to sample from")
    return normals, masks


def plan(normals: list[Path], masks: list[Path], prompts: list[str] | None, count: int,
         seed: int) -> list[Job]:
    """The sources, prompt and seed of every sample; same arguments, same plan."""
    rng = np.random.default_rng(seed)
    jobs = []
    for i in range(count):
        source = normals[int(rng.integers(len(normals)))]
        mask = masks[int(rng.integers(len(masks)))] if masks else None
        prompt = prompts[i * len(prompts) // count] if prompts else None
        jobs.append(Job(source, mask, prompt, int(rng.integers(_SEED_BOUND))))
    return jobs


def _check_writable(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: output exists and is not a folder")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        Path(tempfile.mkdtemp(prefix=f".{out.name}.probe-", dir=out.parent)).rmdir()
    except OSError as err:
        raise DataError(f"{out}: output location is not writable ({err.strerror or err})") from None


def make_backend(name: str, cfg: SynthConfig, data_cfg: DataConfig) -> Backend:
    if name == "procedural":
        return ProceduralBackend(cfg.procedural)
    if name == "sdxl":
        return SDXLBackend(cfg, data_cfg.mask_threshold)
    raise ConfigError(f"unknown synthetic backend {name!r}; expected one of {BACKENDS}")


def synthesize(data: Path, out: Path, cfg: SynthConfig, data_cfg: DataConfig,
               backend: str | None = None, count: int | None = None,
               seed: int | None = None) -> Path:
    """Generate ``count`` synthetic defects from ``data`` into ``out`` (atomic, whole or nothing).

    ``backend``, ``count`` and ``seed`` default to the config's.
    """
    name = backend or cfg.backend
    count = cfg.count if count is None else count
    seed = cfg.seed if seed is None else seed
    if name not in BACKENDS:
        raise ConfigError(f"unknown synthetic backend {name!r}; expected one of {BACKENDS}")
    if count < 1:
        raise ConfigError(f"synthetic sample count must be at least 1, got {count}")
    out = Path(out)
    _check_writable(out)
    kind = _CLASSES[name]
    normals, masks = _sources(Path(data), kind.needs_masks)
    gen = make_backend(name, cfg, data_cfg)
    jobs = plan(normals, masks if kind.needs_masks else [], cfg.prompts if kind.prompted else None,
                count, seed)
    params = gen.params()
    hashes: dict[Path, str] = {}

    def digest(path: Path) -> str:
        if path not in hashes:
            hashes[path] = sha256_file(path)
        return hashes[path]

    try:
        with atomic_dir(out) as stage:
            (stage / "train").mkdir()
            records = []
            for i, job in enumerate(tqdm(jobs, desc=f"synthesize ({name})", unit="img")):
                img, mask, detail = gen.generate(job.source_image, job.source_mask, job.prompt,
                                                 job.seed)
                image_rel, mask_rel = f"train/{i:05d}.png", f"train/{i:05d}_GT.png"
                img.save(stage / image_rel)
                mask.save(stage / mask_rel)
                records.append(Provenance(
                    image=image_rel, mask=mask_rel, backend=name, seed=job.seed,
                    source_image=str(job.source_image.resolve()),
                    source_image_sha256=digest(job.source_image),
                    source_mask=str(job.source_mask.resolve()) if job.source_mask else None,
                    source_mask_sha256=digest(job.source_mask) if job.source_mask else None,
                    model_id=gen.model_id, prompt=job.prompt,
                    negative_prompt=cfg.negative_prompt if kind.prompted else None,
                    params=params, detail=detail))
            write_text_atomic(stage / PROVENANCE_FILE, dumps(records))
    except OSError as err:
        raise DataError(f"{out}: writing the synthetic set failed ({err})") from None
    return out


def regenerate(record: Provenance) -> tuple[Image.Image, Image.Image]:
    """Rebuild one sample from its provenance record: (image, mask).

    The sources must be unchanged (sha256 checked). The procedural backend reproduces the
    pixels exactly; SDXL does on the same device and library versions.
    """
    sources = [(record.source_image, record.source_image_sha256),
               (record.source_mask, record.source_mask_sha256)]
    for path, expected in sources:
        if path is None:
            continue
        if not Path(path).is_file():
            raise DataError(f"{path}: source of a synthetic sample is missing")
        if sha256_file(path) != expected:
            raise DataError(f"{path}: source changed since the sample was made (sha256 differs)")
    if record.backend == "procedural":
        gen: Backend = ProceduralBackend(ProceduralConfig(**record.params))
    elif record.backend == "sdxl":
        p = record.params
        cfg = SynthConfig(backend="sdxl", model_id=record.model_id,
                          negative_prompt=record.negative_prompt or "",
                          num_inference_steps=p["num_inference_steps"],
                          guidance_scale=p["guidance_scale"], strength=p["strength"],
                          padding_mask_crop=p["padding_mask_crop"], work_size=p["work_size"],
                          device=p["device"])
        gen = SDXLBackend(cfg, p["mask_threshold"])
    else:
        raise DataError(f"unknown backend {record.backend!r} in a provenance record")
    mask = Path(record.source_mask) if record.source_mask else None
    img, m, _ = gen.generate(Path(record.source_image), mask, record.prompt, record.seed)
    return img, m
