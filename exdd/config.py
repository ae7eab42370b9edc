"""The one configuration system: typed, validated sections loaded from ``params.yaml``.

DVC reads the same file for its ``params`` dependencies, so every setting that changes a
model is read here and nowhere else. Each subsystem owns one section; unknown keys are
rejected so that a typo in params.yaml is an error, not a silently ignored setting. The
detector's own sections (``model``, ``data``) are its types (exdd.detector.settings): the
detector is built from them without knowing this hub.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote, urlsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

# The detector's own settings types, read here as the model and data sections of params.yaml.
from exdd.detector.settings import (  # noqa: F401  (INPUT_PRESETS: re-exported)
    INPUT_PRESETS,
    DataConfig,
    ModelConfig,
    Section,
    check_nested,
)
from exdd.errors import ConfigError

PARAMS_ENV = "EXDD_PARAMS"
PARAMS_FILE = "params.yaml"  # the default params file, and every line workspace's own
WORKSPACE_MARKER = "dvc.yaml"  # a folder holding it is a line workspace, with its own params


ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def expand_env(value: str, setting: str, environ: Mapping[str, str] = os.environ) -> str:
    """``value`` with every ``${NAME}`` replaced by that environment variable: how a
    password reaches a database or tracking URL without being written into params.yaml,
    which git tracks. In the URL's user:password part the value is URL-quoted."""
    def lookup(found: re.Match[str]) -> str:
        name = found.group(1)
        if name not in environ:
            raise ConfigError(f"{setting}: the environment variable {name} is not set")
        return environ[name]

    userinfo = urlsplit(value).netloc.rpartition("@")[0]
    if userinfo:
        quoted = ENV_REF.sub(lambda found: quote(lookup(found), safe=""), userinfo)
        value = value.replace(f"{userinfo}@", f"{quoted}@", 1)
    return ENV_REF.sub(lookup, value)


def _no_written_password(url: str | None) -> str | None:
    """A URL may name its password only as ``${ENV_VAR}``."""
    password = urlsplit(url).password if url else None
    if password and not ENV_REF.fullmatch(password):
        raise ValueError("a password written into the URL would be committed to git: "
                         "write it as ${ENV_VAR} and set that variable")
    return url


SecretFreeURL = Annotated[str, AfterValidator(_no_written_password)]


def _ordered(v: tuple[float, float]) -> tuple[float, float]:
    if v[0] > v[1]:
        raise ValueError(f"range must be (low, high) with low <= high: {v}")
    return v


FloatRange = Annotated[tuple[float, float], AfterValidator(_ordered)]
IntRange = Annotated[tuple[int, int], AfterValidator(_ordered)]


class ProceduralConfig(Section):
    """Offline defect renderer (exdd.data.synth.procedural); sizes are fractions of the short side.

    The demo data set's defects are drawn with the same settings (``synth.procedural``).

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

    @model_validator(mode="after")
    def _visible(self) -> "ProceduralConfig":
        if self.contrast[1] <= self.mask_delta:
            raise ValueError(f"contrast {self.contrast} never exceeds mask_delta {self.mask_delta}")
        return self


class DemoConfig(Section):
    """The embedded default data set: generated on the fly, deterministic by seed.

    A brushed, grainy metal surface under a slow illumination gradient with sensor noise;
    its defects come from the procedural synthetic-defect renderer with the settings of
    ``synth.procedural`` (one renderer, one set of settings).
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
    """Validation bounds for new line images (great-expectations suite parameters).

    Image size, modes and the mean-intensity range are derived from the dataset's accepted
    images unless set here; the fixed bounds below always apply on top.

    ``size_policy`` says which image sizes the line accepts. The detector resizes every
    image to its input size, so the default (``aspect``) only refuses what it cannot use
    well: images whose shorter side is below ``min_side`` and an aspect ratio (width /
    height) beyond ``aspect_factor`` times the line's, either way. ``tolerance`` also bounds
    width and height (relative ``size_tolerance`` around the line's median), ``exact``
    wants the line's usual size, ``any`` only ``min_side``. Whatever the policy, a batch
    whose median width or height differs from the data set's by more than
    ``drift_tolerance`` (a camera change) is reported as a size drift event.
    """

    labels: list[str] = ["normal", "defect"]
    default_label: str = Field("normal", description="label of images the sidecar does not list")
    defect_label: str = Field("defect", description="the label that requires a non-empty mask")
    default_split: Literal["train", "test"] = "train"
    labels_file: str = Field("labels.csv", description="inbox sidecar: image,label,mask,...")
    allowed_modes: list[str] = ["L", "RGB"]
    size_policy: Literal["exact", "tolerance", "aspect", "any"] = "aspect"
    expected_width: int | None = Field(
        None, ge=1, description="exact/tolerance reference; None: the dataset's usual width")
    expected_height: int | None = Field(None, ge=1)
    size_tolerance: float = Field(0.1, ge=0.0, lt=1.0,
                                  description="tolerance policy: relative width/height deviation")
    aspect_factor: float = Field(4.0, ge=1.0,
                                 description="aspect policy: aspect within line's / and x this")
    aspect_range: FloatRange | None = Field(
        None, description="aspect policy: fixed (low, high) width/height; None: derived")
    min_side: int = Field(16, ge=1, description="every policy: a shorter side below is tiny")
    drift_tolerance: float = Field(
        0.25, gt=0.0, description="batch median width/height change that is a size drift")
    derive_from_dataset: bool = True
    profile_max_images: int = Field(200, ge=1, description="accepted images read to derive bounds")
    intensity_margin: float = Field(30.0, ge=0.0, description="widens the dataset's mean range")
    min_mean_intensity: float = Field(10.0, ge=0.0, le=255.0)
    max_mean_intensity: float = Field(245.0, ge=0.0, le=255.0)
    min_std_intensity: float = Field(2.0, ge=0.0)
    min_rows: int = Field(1, ge=0)
    max_rows: int = Field(100000, ge=1)
    max_failed_fraction: float = Field(0.5, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _consistent(self) -> "IntakeConfig":
        for name in ("default_label", "defect_label"):
            if getattr(self, name) not in self.labels:
                raise ValueError(f"{name} {getattr(self, name)!r} is not in labels {self.labels}")
        if self.min_mean_intensity > self.max_mean_intensity:
            raise ValueError("min_mean_intensity is above max_mean_intensity")
        if self.min_rows > self.max_rows:
            raise ValueError("min_rows is above max_rows")
        return self


class GateConfig(Section):
    """Promotion gate: absolute thresholds and no-regression tolerance vs the champion.

    Both models are compared on the same benchmark split (the test split of ``benchmark``,
    identified by the hash of its files); a line's own params.yaml sets its thresholds.
    """

    min_image_auroc: float = Field(0.90, ge=0.0, le=1.0)
    min_pixel_auroc: float = Field(0.95, ge=0.0, le=1.0)
    regression_tolerance: float = Field(0.01, ge=0.0, le=1.0)
    benchmark: str = Field("data/benchmark", description="benchmark data set (workspace-relative)")
    overlay_images: int = Field(8, ge=1, description="benchmark images in the MLflow overlay grid")


class PublishConfig(Section):
    """Where published models go: DVC remote, git tags, MLflow tracking/registry, audit log.

    Relative paths (and a relative sqlite tracking URI) are taken from the line workspace.
    Remote credentials never appear here: DVC and boto3 read them from the environment, as
    MLflow does MLFLOW_TRACKING_USERNAME / _PASSWORD; a database password in
    ``tracking_uri`` is written ``${ENV_VAR}`` and read from the environment.
    """

    line: str = "demo"
    registered_model_prefix: str = "exdd"
    tracking_uri: SecretFreeURL = Field(
        "sqlite:///mlruns.db", description="${ENV_VAR} in it is read from the environment")
    artifact_location: str = Field("mlartifacts", description="MLflow artifact root of new experiments")
    dvc_remote: str = Field("storage", description="name of the DVC remote in .dvc/config")
    dvc_remote_url: str = Field("../exdd-remote", description="a local folder or s3://bucket/prefix")
    s3_endpoint_url: str | None = Field(None, description="S3-API endpoint of on-premises stores")
    champion_dir: str = Field("models/champion", description="the champion's files, checked out")
    audit_log: str = Field("audit/models.jsonl", description="append-only publish/rollback log")
    probe_images: int = Field(8, ge=1, description="benchmark images scored at publish, for rollback")


class ReviewConfig(Section):
    """Operator review dashboard: verdict store, access control and queue defaults.

    Access control (``auth``, ``secret_env``, ``auth_header``, ``trusted_proxies``,
    ``proxy_secret_*``) and ``port`` are read from the params file that lists the lines;
    everything else from each line's workspace params, relative paths taken from that
    workspace. Secrets never appear here, only the names of the environment variables that
    hold them. Header auth trusts the identity header only from ``trusted_proxies`` and/or
    with the proxy's shared secret: one of the two must be set.
    """

    db_url: SecretFreeURL | None = Field(
        None, description="SQLAlchemy URL of the verdict store (${ENV_VAR}: from the "
                          "environment); None = db_file per workspace")
    db_file: str = Field("reviews/verdicts.db", description="default sqlite verdict store")
    scores_dir: str = Field("reviews/scores", description="<run_id>/scores.csv + overlays/")
    outcomes_dir: str = Field("reports/outcomes", description="<run_id>.json nightly outcomes")
    masks_dir: str = Field("reviews/masks", description="operator-confirmed defect masks")
    export_lock: str = Field("reviews/export.lock", description="serialises inbox exports")
    auth: Literal["none", "secret", "header"] = "none"
    secret_env: str = Field("EXDD_REVIEW_SECRET", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
                            description="name of the env var holding the shared secret")
    auth_header: str = Field("X-Forwarded-User", min_length=1,
                             description="identity header set by the reverse proxy")
    trusted_proxies: list[str] = Field(
        [], description="addresses / networks whose identity header is trusted (header auth)")
    proxy_secret_env: str | None = Field(
        None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="env var holding a secret the proxy must send (header auth)")
    proxy_secret_header: str = Field("X-Exdd-Proxy-Secret", min_length=1,
                                     description="header carrying that secret")
    threshold_source: Literal["scores", "champion"] = Field(
        "scores", description="slider default: the scoring run's threshold or the champion's")
    recent_runs: int = Field(14, ge=1, description="latest scoring runs loaded into the queue")
    page_size: int = Field(25, ge=1, description="queue rows shown per page")
    mask_level: float = Field(0.5, gt=0.0, lt=1.0,
                              description="default heatmap level (0..1 of its colour scale)")
    port: int = Field(8501, ge=1, le=65535, description="served on 127.0.0.1 only")

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, v: list[str]) -> list[str]:
        for entry in v:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"not an IP address or network: {entry!r}") from None
        return v


class ServeConfig(Section):
    """Online scoring (``exdd serve``): where it listens, what it accepts, how it follows
    the registry.

    Read from the params file that lists the lines (a deployment setting, like the review
    dashboard's port); the line's registry comes from its workspace params. The bearer token
    never appears here, only the name of the environment variable that holds it.
    """

    host: str = Field("127.0.0.1", min_length=1, description="bind address; loopback unless told")
    port: int = Field(8000, ge=1, le=65535)
    poll_interval_s: float = Field(10.0, gt=0.0, description="how often the champion alias is read")
    max_body_bytes: int = Field(20 * 1024 * 1024, ge=1024, description="largest request body")
    max_images: int = Field(32, ge=1, description="images in one batch request")
    max_pixels: int = Field(40_000_000, ge=1024, description="largest decoded image, width x height")
    formats: list[Literal["PNG", "JPEG", "BMP"]] = Field(["PNG", "JPEG", "BMP"], min_length=1)
    auth: Literal["none", "token"] = "none"
    token_env: str = Field("EXDD_SERVE_TOKEN", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
                           description="name of the env var holding the bearer token")
    latency_buckets_s: list[float] = Field(
        [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0], min_length=1,
        description="bounds of the /metrics latency histogram")


class LineConfig(Section):
    """One production line served by its own nightly DAG (``dags/exdd_nightly.py``).

    Each line has its own git + DVC workspace (``exdd workspace init``) whose params.yaml
    holds the line's own detector, gate and publish settings. ``workspace`` is taken from
    the folder of the params file that lists the line; ``inbox`` and ``dataset`` from the
    workspace (the inbox may also be ``s3://bucket/prefix``).
    """

    name: str
    workspace: str = Field(..., min_length=1, description="the line's git + DVC workspace")
    inbox: str = Field("data/inbox", min_length=1, description="folder or s3://bucket/prefix")
    dataset: str = Field("data/dataset", min_length=1,
                         description="validated data set, as in the workspace's dvc.yaml")
    schedule: str | None = Field("0 2 * * *", description="cron or preset; null: manual only")
    start_date: date = Field(date(2025, 1, 1), description="first schedulable day (no catchup)")
    retries: int = Field(2, ge=0, description="retries of a failed task")
    retry_delay_s: float = Field(60.0, gt=0.0, description="first retry delay; doubles each time")
    retry_backoff: float = Field(2.0, ge=1.0, description="retry delay multiplier per attempt")
    max_retry_delay_s: float = Field(1800.0, gt=0.0)
    task_timeout_s: float = Field(6 * 3600.0, gt=0.0, description="a task running longer fails")
    queue: str = Field("default", min_length=1, description="Celery queue of the line's tasks")

    @field_validator("name")
    @classmethod
    def _slug(cls, v: str) -> str:
        if not v.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"line name must be letters, digits, '-' or '_': {v!r}")
        return v

    @property
    def repo_pool(self) -> str:
        """Airflow pool (size 1) of the tasks that touch the workspace's git/DVC state."""
        return f"exdd_{self.name}_repo"

    def workspace_path(self, base: str | os.PathLike[str]) -> Path:
        """The workspace folder; a relative ``workspace`` is taken from ``base``."""
        return (Path(base) / self.workspace).resolve()


class Params(Section):
    """All of params.yaml."""

    data: DataConfig = DataConfig()
    demo: DemoConfig = DemoConfig()
    model: ModelConfig = ModelConfig()
    synth: SynthConfig = SynthConfig()
    intake: IntakeConfig = IntakeConfig()
    gate: GateConfig = GateConfig()
    publish: PublishConfig = PublishConfig()
    review: ReviewConfig = ReviewConfig()
    serve: ServeConfig = ServeConfig()
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
    model = (raw or {}).get("model")
    if isinstance(model, dict):
        check_nested(model, source)
    try:
        return Params.model_validate(raw or {})
    except ValidationError as err:
        raise ConfigError(_format_error(source, err)) from None


class _ParamsDumper(yaml.SafeDumper):
    """Block mappings; lists of plain values on one line, as params.yaml writes them."""


def _sequence(dumper: yaml.SafeDumper, items: list[Any]) -> yaml.Node:
    flat = all(not isinstance(item, (dict, list)) for item in items)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", items, flow_style=flat)


_ParamsDumper.add_representer(list, _sequence)


def params_yaml(params: Params, described: bool = False) -> str:
    """``params`` as params.yaml text, every key written out (``exdd params dump``);
    ``described``: each setting carries its field description as a comment, so a file
    made from the defaults (a new line workspace's) documents itself."""
    if not described:
        return yaml.dump(params.model_dump(mode="json"), Dumper=_ParamsDumper, sort_keys=False,
                         default_flow_style=False)
    return "".join(_described(params, params.model_dump(mode="json"), 0))


def _described(model: BaseModel, values: dict[str, Any], depth: int) -> list[str]:
    """The YAML lines of one section, its fields' descriptions as end-of-line comments."""
    rows, pad = [], "  " * depth
    for name, field in type(model).model_fields.items():
        value, note = values[name], " ".join((field.description or "").split())
        comment = f"  # {note}" if note else ""
        child = getattr(model, name)
        if isinstance(child, BaseModel):
            rows.append(f"{pad}{name}:{comment}\n")
            rows += _described(child, value, depth + 1)
            continue
        text = yaml.dump({name: value}, Dumper=_ParamsDumper, sort_keys=False,
                         default_flow_style=False).rstrip("\n").splitlines()
        rows.append(f"{pad}{text[0]}{comment}\n")
        rows += [f"{pad}{row}\n" for row in text[1:]]
    return rows


def params_file(path: str | os.PathLike[str] | None = None) -> Path:
    """Which params file is meant: the argument, else $EXDD_PARAMS, else ./params.yaml."""
    return Path(path or os.environ.get(PARAMS_ENV) or PARAMS_FILE)


def load_params(path: str | os.PathLike[str] | None = None) -> Params:
    """Load params.yaml (argument, else $EXDD_PARAMS, else ./params.yaml, else defaults).

    The defaults only outside a line workspace: a folder with a dvc.yaml but no params.yaml
    is a broken workspace, and fitting it with defaults would hide that.
    """
    p = params_file(path)
    if not path and not os.environ.get(PARAMS_ENV) and not p.exists():
        if Path(WORKSPACE_MARKER).exists():
            raise ConfigError(f"{p.resolve()}: not found beside {WORKSPACE_MARKER} "
                              "(a line workspace); restore it or give --params FILE")
        return Params()
    if not p.is_file():
        raise ConfigError(f"{p}: params file not found")
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{p}: not valid YAML: {err}") from None
    if raw is not None and not isinstance(raw, dict):
        raise ConfigError(f"{p}: top level must be a mapping")
    return params_from_dict(raw or {}, str(p))
