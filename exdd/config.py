"""The one configuration system: typed, validated sections loaded from ``params.yaml``.

DVC reads the same file for its ``params`` dependencies, so every setting that changes a
model lives here and nowhere else. Each subsystem owns one section; unknown keys are
rejected so that a typo in params.yaml is an error, not a silently ignored setting.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from exdd.errors import ConfigError

PARAMS_ENV = "EXDD_PARAMS"


class Section(BaseModel):
    """Base for every section: strict keys, validated on assignment too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(Section):
    """How images are read: the network input size and the mask threshold."""

    image_height: int = Field(256, ge=32, le=4096)
    image_width: int = Field(256, ge=32, le=4096)
    mask_threshold: int = Field(127, ge=0, le=254, description="mask pixel > this is defect")


def _ordered(v: tuple[float, float]) -> tuple[float, float]:
    if v[0] > v[1]:
        raise ValueError(f"range must be (low, high) with low <= high: {v}")
    return v


FloatRange = Annotated[tuple[float, float], AfterValidator(_ordered)]
IntRange = Annotated[tuple[int, int], AfterValidator(_ordered)]


class ProceduralConfig(Section):
    """Offline defect renderer (exdd.synth.procedural); sizes are fractions of the short side.

    Each range is (low, high), sampled uniformly per defect.
    """

    kinds: list[Literal["scratch", "spot", "blotch", "pit"]] = Field(
        ["scratch", "spot", "blotch", "pit"], min_length=1)
    defects_per_image: IntRange = (1, 2)
    contrast: FloatRange = Field((0.25, 0.6), description="relative change of local brightness")
    texture_keep: float = Field(0.6, ge=0.0, le=1.0,
                                description="share of the surface texture kept inside a defect")
    light_sigma: float = Field(0.05, gt=0.0, description="local-illumination blur, x short side")
    edge_softness: float = Field(1.0, gt=0.0, description="alpha ramp width in pixels")
    scratch_length: FloatRange = (0.25, 0.9)
    scratch_width: FloatRange = (0.008, 0.025)
    scratch_bend: FloatRange = Field((0.0, 0.25), description="control-point offset x length")
    spot_radius: FloatRange = (0.03, 0.08)
    blotch_radius: FloatRange = (0.08, 0.2)
    pit_radius: FloatRange = (0.015, 0.045)
    roughness: float = Field(0.25, ge=0.0, lt=1.0, description="outline wobble of round defects")
    mask_delta: float = Field(0.01, gt=0.0, lt=1.0,
                              description="a pixel changed by more than this is in the mask")


class DemoConfig(Section):
    """The embedded default data set: generated on the fly, deterministic by seed.

    A brushed, grainy metal surface under a slow illumination gradient with sensor noise;
    its defects come from the procedural synthetic-defect renderer (``defects``).
    """

    height: int = Field(160, ge=32)
    width: int = Field(96, ge=32)
    train_normal: int = Field(40, ge=1)
    train_defect: int = Field(12, ge=0)
    test_normal: int = Field(20, ge=1)
    test_defect: int = Field(20, ge=1)
    seed: int = 0
    base_level: FloatRange = Field((0.35, 0.6), description="mean grey level of a surface")
    gradient: float = Field(0.12, ge=0.0, description="illumination change across the image")
    brush: float = Field(0.06, ge=0.0, description="strength of the brushed streaks")
    brush_length: float = Field(12.0, gt=0.0, description="streak blur along x, pixels")
    grain: float = Field(0.025, ge=0.0, description="fine grain strength")
    noise: float = Field(0.01, ge=0.0, description="sensor noise sigma")
    defects: ProceduralConfig = ProceduralConfig(contrast=(0.15, 0.4))


class ModelConfig(Section):
    """The detector: backbone, patch features, memory banks and scoring."""

    backbone: Literal["efficientnet_lite0", "wide_resnet50_2"] = "efficientnet_lite0"
    backbone_weights: str | None = Field(
        None, description="file path of backbone weights; env EXDD_BACKBONE_WEIGHTS overrides"
    )
    aggregation_kernel: int = Field(3, ge=1, description="neighbourhood (p x p) average pooling")
    projection_dim: int = Field(128, ge=8)
    seed: int = 0
    coreset_normal: float = Field(0.02, gt=0.0, le=1.0)
    coreset_defect: float = Field(0.10, gt=0.0, le=1.0)
    coreset_projection_dim: int = Field(128, ge=8, description="JL projection used while sampling")
    coreset_chunk_size: int = Field(16384, ge=64, description="rows per distance chunk while sampling")
    nn_use_gpu: bool = Field(True, description="faiss on GPU when it has GPU support and CUDA")
    nn_batch_size: int = Field(65536, ge=1, description="queries per faiss search call")
    stream_chunk_patches: int = Field(
        1_000_000, ge=1000, description="patch buffer reduced by coreset when full (bounds RAM)"
    )
    mask_dilation: int = Field(0, ge=0, description="dilate defect masks by this many pixels")
    single_bank: bool = False
    scoring: Literal["reference", "calibrated"] = "calibrated"
    knn: int = Field(3, ge=1, description="neighbours for PatchCore reweighting")
    smoothing_sigma: float = Field(4.0, ge=0.0)
    top_k_fraction: float = Field(0.01, gt=0.0, le=1.0, description="pooling for image score")
    ratio_eps: float = Field(1e-6, gt=0.0)
    tau_quantile: float = Field(0.5, gt=0.0, lt=1.0, description="bank distance scale quantile")
    calibration_patches: int = Field(20000, ge=100, description="held-out patches used for tau")
    batch_size: int = Field(8, ge=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"


class SynthConfig(Section):
    """Synthetic defects for the positive bank (paper section 3.2).

    The SDXL settings are the paper's; ``procedural`` is the offline renderer.
    """

    backend: Literal["procedural", "sdxl"] = "procedural"
    count: int = Field(100, ge=1)
    seed: int = 0
    model_id: str = Field("diffusers/stable-diffusion-xl-1.0-inpainting-0.1",
                          description="hub id (HF cache or download) or a local directory")
    prompts: list[str] = Field(["copper metal scratches", "white marks on the wall"],
                               min_length=1)
    negative_prompt: str = "smooth, plain, black, dark, shadow"
    num_inference_steps: int = Field(30, ge=1)
    guidance_scale: float = 20.0
    strength: float = Field(0.99, gt=0.0, le=1.0)
    padding_mask_crop: int = Field(2, ge=0)
    work_size: int = Field(1024, ge=64)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    procedural: ProceduralConfig = ProceduralConfig()


class IntakeConfig(Section):
    """Validation bounds for new line images (great-expectations suite parameters)."""

    labels: list[str] = ["normal", "defect"]
    default_label: str = "normal"
    allowed_modes: list[str] = ["L", "RGB"]
    expected_width: int | None = None
    expected_height: int | None = None
    min_mean_intensity: float = 10.0
    max_mean_intensity: float = 245.0
    min_std_intensity: float = 2.0
    min_rows: int = Field(1, ge=0)
    max_rows: int = Field(100000, ge=1)
    max_failed_fraction: float = Field(0.5, ge=0.0, le=1.0)


class GateConfig(Section):
    """Promotion gate: absolute thresholds and no-regression tolerance vs the champion."""

    min_image_auroc: float = Field(0.90, ge=0.0, le=1.0)
    min_pixel_auroc: float = Field(0.95, ge=0.0, le=1.0)
    regression_tolerance: float = Field(0.01, ge=0.0, le=1.0)


class PublishConfig(Section):
    """Where published models go: DVC remote, MLflow tracking/registry."""

    line: str = "demo"
    registered_model_prefix: str = "exdd"
    tracking_uri: str = "sqlite:///mlruns.db"
    dvc_remote: str = "local"
    dvc_remote_url: str = "../exdd-remote"
    s3_endpoint_url: str | None = None


class LineConfig(Section):
    """One production line served by its own nightly DAG."""

    name: str
    schedule: str = "0 2 * * *"
    inbox: str
    dataset: str

    @field_validator("name")
    @classmethod
    def _slug(cls, v: str) -> str:
        if not v.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"line name must be letters, digits, '-' or '_': {v!r}")
        return v


class Params(Section):
    """All of params.yaml."""

    data: DataConfig = DataConfig()
    demo: DemoConfig = DemoConfig()
    model: ModelConfig = ModelConfig()
    synth: SynthConfig = SynthConfig()
    intake: IntakeConfig = IntakeConfig()
    gate: GateConfig = GateConfig()
    publish: PublishConfig = PublishConfig()
    lines: list[LineConfig] = []

    @model_validator(mode="after")
    def _unique_lines(self) -> "Params":
        names = [line.name for line in self.lines]
        if len(names) != len(set(names)):
            raise ValueError(f"line names must be unique: {names}")
        return self


def _format_error(source: str, err: ValidationError) -> str:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "(top level)"
    return f"{source}: bad config value at '{where}': {first['msg']}"


def params_from_dict(raw: dict[str, Any], source: str = "params") -> Params:
    """Validate a raw mapping; the error names the file and the offending key."""
    try:
        return Params.model_validate(raw or {})
    except ValidationError as err:
        raise ConfigError(_format_error(source, err)) from None


def load_params(path: str | os.PathLike[str] | None = None) -> Params:
    """Load params.yaml (argument, else $EXDD_PARAMS, else ./params.yaml, else defaults)."""
    candidate = path or os.environ.get(PARAMS_ENV)
    if candidate is None:
        default = Path("params.yaml")
        if not default.exists():
            return Params()
        candidate = default
    p = Path(candidate)
    if not p.is_file():
        raise ConfigError(f"{p}: config file not found")
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{p}: not valid YAML: {err}") from None
    if raw is not None and not isinstance(raw, dict):
        raise ConfigError(f"{p}: top level must be a mapping")
    return params_from_dict(raw or {}, str(p))
