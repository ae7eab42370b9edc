"""The detector's settings: typed sections the detector is built from, knowing no file.

``ModelConfig`` groups its settings by what they change: ``features``, ``banks`` and
``coreset`` shape the fitted banks (changing them needs a refit); ``scoring``, ``search``
and ``runtime`` only change how a fitted model predicts (``PredictTimeSection``), so a fitted
model can be compared under other values of them without refitting. The config hub
(exdd.config) reads these types from params.yaml; the detector never reads a file.

Pure types with no behaviour beyond validation, so they sit at the bottom of the layers
(tests/unit/test_layers.py) although they belong to the detector.
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from exdd.errors import ConfigError


class Section(BaseModel):
    """Base for every settings section: strict keys, validated on assignment too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class PredictTimeSection(Section):
    """A section that only changes how a fitted model predicts (no refit needed)."""


# Named input sizes (height, width): ``ksdd2`` is the paper's KolektorSDD2 setting.
INPUT_PRESETS: dict[str, tuple[int, int]] = {"ksdd2": (632, 224)}


class DataConfig(Section):
    """How images are read: the network input size and the mask threshold.

    With ``image_height`` / ``image_width`` unset (and no ``preset``) the input keeps the
    training images' median aspect ratio at ``pixel_budget`` pixels (exdd.detector.geometry); the
    fitted model stores the size it chose.
    """

    image_height: int | None = Field(None, ge=1, le=4096, description="None: from the data")
    image_width: int | None = Field(None, ge=1, le=4096, description="None: from the data")
    preset: str | None = Field(None, description=f"named size: {', '.join(INPUT_PRESETS)}")
    pixel_budget: int = Field(256 * 256, ge=1024, le=4096 * 4096,
                              description="input pixels when the size follows the data")
    mask_threshold: int = Field(127, ge=0, le=254, description="mask pixel > this is defect")

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, v: str | None) -> str | None:
        if v is not None and v not in INPUT_PRESETS:
            raise ValueError(f"unknown input size preset {v!r}; choose one of "
                             f"{', '.join(sorted(INPUT_PRESETS))}")
        return v

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width); only a resolved config (a fitted model's) has one."""
        if self.image_height is None or self.image_width is None:
            raise ConfigError("the input size is not resolved yet (it is chosen at fit)")
        return self.image_height, self.image_width


class AutoChoice(NamedTuple):
    """What ``aggregation_padding: auto`` and ``image_score: auto`` become."""

    padding: str
    pooling: str


# Per kind of anomaly map, chosen by bench/select_defaults.py's minimax regret over every
# data set's train-split CV (docs/benchmarks.md): a map of M_N alone (a single bank, rule
# normal, or a dual line with too few real defects to validate its rules) pools features and
# image scores as PatchCore does; a dual rule's map averages the cells inside the map and
# takes the top-k mean.
AUTO = {"normal_map": AutoChoice(padding="zeros", pooling="max"),
        "dual": AutoChoice(padding="inside", pooling="top_k")}


class FeatureSettings(Section):
    """Backbone and locally aware patch features (exdd.detector.features)."""

    backbone: Literal["efficientnet_lite0", "wide_resnet50_2"] = "efficientnet_lite0"
    backbone_weights: str | None = Field(
        None, description="file path of backbone weights; env EXDD_BACKBONE_WEIGHTS overrides"
    )
    aggregation_kernel: int = Field(3, ge=1, description="neighbourhood (p x p) average pooling")
    aggregation_padding: Literal["auto", "zeros", "inside"] = Field(
        "auto", description="border windows average zeros beyond the map (PatchCore's) or "
                            "only the cells inside it; auto = chosen at fit (AUTO)")
    projection_dim: int = Field(128, ge=8)


class BankSettings(Section):
    """Streaming bank construction and tau (exdd.detector.banks)."""

    stream_chunk_patches: int = Field(
        1_000_000, ge=1000, description="patch buffer reduced by coreset when full (bounds RAM)"
    )
    mask_dilation: int = Field(8, ge=0, description="dilate defect masks by this many pixels "
                                                   "(at the input size) before taking M_P cells")
    tau_quantile: float = Field(0.5, gt=0.0, lt=1.0, description="bank distance scale quantile")
    calibration_patches: int = Field(20000, ge=100, description="held-out patches used for tau")


class CoresetSettings(Section):
    """Greedy coreset of each bank (exdd.detector.sampler)."""

    normal: float = Field(0.02, gt=0.0, le=1.0, description="share of normal patches M_N keeps")
    defect: float = Field(0.10, gt=0.0, le=1.0, description="share of defect patches M_P keeps")
    defect_min: int = Field(
        2048, ge=1, description="M_P keeps at least this many patches (all, when fewer): a "
                                "line with few defects keeps every defect patch")
    projection_dim: int = Field(128, ge=8, description="JL projection used while sampling")
    chunk_size: int = Field(16384, ge=64, description="rows per distance chunk while sampling")
    max_groups: int = Field(32, ge=1, description="groups compared per coreset step (speed only)")
    sketch_dim: int = Field(32, ge=1, description="principal axes of the distance lower bound")
    sketch_sample: int = Field(20000, ge=100, description="rows used to find those axes")


class SearchSettings(PredictTimeSection):
    """Nearest-neighbour search over the banks (exdd.detector.index)."""

    use_gpu: bool = Field(True, description="faiss on GPU when it has GPU support and CUDA")
    batch_size: int = Field(65536, ge=1, description="queries per faiss search call")
    index: Literal["flat", "hnsw"] = Field("flat", description="exact, or approximate graph")
    hnsw_m: int = Field(16, ge=4, description="HNSW links per node")
    hnsw_ef: int = Field(16, ge=1, description="HNSW search breadth (recall vs speed)")


class ScoringSettings(PredictTimeSection):
    """Distances -> anomaly maps and image scores (exdd.detector.scoring)."""

    single_bank: bool = Field(False, description="PatchCore: M_N alone (fit builds no M_P)")
    rule: Literal["auto", "reference", "calibrated", "weighted", "boosted", "normal"] = Field(
        "auto", description="dual rule of the anomaly map (exdd.detector.scoring); reference = "
                            "the paper's; normal = d_N alone; auto = chosen at fit on held-out "
                            "training images (model.selection)")
    image_rule: Literal["same", "calibrated", "weighted", "boosted", "normal"] = Field(
        "same", description="dual rule of the map the image score is pooled from; same = rule's")
    defect_weight: float = Field(
        1.0, ge=0.0, le=4.0, description="weighted rule: d_N x (d_N / (d_N + d_P)) ** this; "
                                         "0 = the normal bank alone")
    boost_weight: float = Field(
        2.0, ge=0.0, le=4.0, description="boosted rule: d_N x max(1, 2 d_N / (d_N + d_P)) ** this")
    image_score: Literal["auto", "max", "top_k", "reweighted"] = Field(
        "auto", description="image score from the smoothed map: its max or top-k mean; "
                            "reweighted = PatchCore's eq. 7 (single_bank only); auto = max "
                            "for M_N's map alone, top-k for a dual rule's (AUTO)")
    knn: int = Field(3, ge=1, description="neighbours for PatchCore reweighting")
    smoothing_sigma: float = Field(4.0, ge=0.0)
    top_k_fraction: float = Field(0.01, gt=0.0, le=1.0, description="pooling for image score")
    ratio_eps: float = Field(1e-6, gt=0.0)

    @model_validator(mode="after")
    def _pooling_fits_rule(self) -> "ScoringSettings":
        if self.image_score == "reweighted" and not self.single_bank:
            raise ValueError("image_score 'reweighted' is PatchCore's single-bank score: set "
                             "single_bank, or use max / top_k")
        if self.rule == "reference" and self.image_rule != "same":
            raise ValueError("rule 'reference' has its own image score: image_rule must be "
                             "'same'")
        return self

    @property
    def normal_map(self) -> bool:
        """Whether the anomaly map is M_N's distance alone (a single bank, or rule normal)."""
        return self.single_bank or self.rule == "normal"

    @property
    def auto(self) -> AutoChoice:
        """What the ``auto`` settings become for this kind of map."""
        return AUTO["normal_map" if self.normal_map else "dual"]

    @property
    def pooling(self) -> str:
        """``image_score`` made concrete."""
        return self.auto.pooling if self.image_score == "auto" else self.image_score

    def image_settings(self) -> "ScoringSettings":
        """The settings the image score's map is made with (``image_rule`` as the rule)."""
        if self.image_rule == "same":
            return self
        return self.model_copy(update={"rule": self.image_rule, "image_rule": "same"})


SelectableRule = Literal["normal", "calibrated", "weighted", "boosted"]


class SelectionSettings(Section):
    """How fit chooses the scoring rules when ``scoring.rule`` is ``auto``
    (exdd.detector.selection): on training images held out of the banks, never a test split.

    No rule is best on every line: suppressing patches far from M_P (``weighted``) wins where
    the defects repeat, and loses image ranking where they are tiny or new (``boosted``
    never suppresses). The map's rule is the candidate with the best held-out pixel AUROC,
    the image score's the one with the best image AUROC.
    """

    candidates: list[SelectableRule] = Field(
        default_factory=lambda: ["weighted", "boosted"], min_length=1)
    fallback: SelectableRule = Field(
        "normal", description="the map's rule when fit cannot validate: fewer real defect "
                              "images than min_defect_images (a line with synthetic defects "
                              "only), or too few normal images. A synthetic M_P knows nothing "
                              "of where real defects lie: the map is M_N's alone")
    fallback_image: SelectableRule = Field(
        "boosted", description="the image score's rule then: boosted lets M_P raise images "
                               "with defect-like patches and never lowers one")
    folds: int = Field(3, ge=2, description="folds over the real defect images")
    normal_images: int = Field(48, ge=2, description="normal images held out of M_N' (at most)")
    normal_share: float = Field(0.2, gt=0.0, lt=1.0,
                                description="at most this share of the normal images is held out")
    defect_images: int = Field(48, ge=2, description="real defect images validated (at most)")
    min_defect_images: int = Field(3, ge=2, description="fewer real defect images: fallback")
    pixel_stride: int = Field(4, ge=1, description="pixel AUROC on every n-th pixel per axis")
    synthetic: Literal["choose", "keep"] = Field(
        "choose", description="choose: M_P keeps the synthetic defects only where the held-out "
                              "real defects favour them; keep: always")


class RuntimeSettings(PredictTimeSection):
    """Where and in what batches images go through the backbone."""

    batch_size: int = Field(8, ge=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"


class ModelConfig(Section):
    """The detector: one seed and a section per concern."""

    seed: int = Field(0, description="projection, coreset start and tau sample")
    features: FeatureSettings = FeatureSettings()
    banks: BankSettings = BankSettings()
    coreset: CoresetSettings = CoresetSettings()
    search: SearchSettings = SearchSettings()
    scoring: ScoringSettings = ScoringSettings()
    selection: SelectionSettings = SelectionSettings()
    runtime: RuntimeSettings = RuntimeSettings()

    def with_padding(self, validated: bool) -> ModelConfig:
        """The settings fit builds with: ``aggregation_padding: auto`` made concrete for the
        map the banks serve: the rule's, or the fallback's when fit cannot validate the rules
        on real defects (``validated`` false)."""
        if self.features.aggregation_padding != "auto":
            return self
        scoring = (self.scoring if validated
                   else self.scoring.model_copy(update={"rule": self.selection.fallback}))
        return self.updated(features={"aggregation_padding": scoring.auto.padding})

    def updated(self, **changes: dict[str, Any]) -> ModelConfig:
        """A validated copy with, per section keyword, those settings of it changed:
        ``cfg.updated(search={"index": "hnsw"})``."""
        merged = self.model_dump()
        for section, values in changes.items():
            if not isinstance(merged.get(section), dict):
                raise ConfigError(f"model.{section}: not a section of the model settings")
            merged[section] = {**merged[section], **values}
        try:
            return ModelConfig.model_validate(merged)
        except ValidationError as err:
            first = err.errors()[0]
            raise ConfigError(f"model.{'.'.join(map(str, first['loc']))}: {first['msg']}"
                              ) from None


def predict_time_sections() -> tuple[str, ...]:
    """Names of the ``ModelConfig`` sections a fitted model may predict with other values of."""
    return tuple(name for name, field in ModelConfig.model_fields.items()
                 if isinstance(field.annotation, type)
                 and issubclass(field.annotation, PredictTimeSection))


# model.json (format version 1) stores ModelConfig flat, as it was before the sections:
# its key for every setting, so a model's files and hash do not depend on the grouping.
FLAT_KEYS: dict[str, tuple[str, ...]] = {
    "seed": ("seed",),
    **{name: ("features", name) for name in FeatureSettings.model_fields},
    **{name: ("banks", name) for name in BankSettings.model_fields},
    **{f"coreset_{name}": ("coreset", name) for name in CoresetSettings.model_fields},
    **{f"nn_{name}": ("search", name) for name in SearchSettings.model_fields},
    **{("scoring" if name == "rule" else name): ("scoring", name)
       for name in ScoringSettings.model_fields},
    **{name: ("runtime", name) for name in RuntimeSettings.model_fields},
    **{f"selection_{name}": ("selection", name) for name in SelectionSettings.model_fields},
}
# Settings added after format 1, each with the value a model.json without it means (how
# models behaved before the setting existed): written only where they differ from it, so a
# model that does not use them keeps the files (and the hash) it had.
ADDED_AFTER_V1: dict[str, Any] = {
    "image_rule": "same", "boost_weight": ScoringSettings().boost_weight,
    "aggregation_padding": "inside",
    **{f"selection_{name}": value for name, value in SelectionSettings().model_dump().items()},
}


def to_flat(model: ModelConfig) -> dict[str, Any]:
    """The flat mapping model.json stores (old key -> value)."""
    nested = model.model_dump()
    flat = {}
    for key, path in FLAT_KEYS.items():
        value: Any = nested
        for part in path:
            value = value[part]
        if key not in ADDED_AFTER_V1 or value != ADDED_AFTER_V1[key]:
            flat[key] = value
    return flat


def from_flat(flat: dict[str, Any]) -> ModelConfig:
    """The ``ModelConfig`` of a flat mapping written by ``to_flat``."""
    unknown = sorted(set(flat) - set(FLAT_KEYS))
    if unknown:
        raise ConfigError(f"unknown model settings {', '.join(unknown)}")
    nested: dict[str, Any] = {}
    absent = {key: value for key, value in ADDED_AFTER_V1.items() if key not in flat}
    for key, value in {**flat, **absent}.items():
        *sections, name = FLAT_KEYS[key]
        target = nested
        for section in sections:
            target = target.setdefault(section, {})
        target[name] = value
    return ModelConfig.model_validate(nested)


def check_nested(raw: dict[str, Any], source: str) -> None:
    """A flat (pre-sections) key in a ``model`` mapping is a one-line ConfigError naming its
    new place: an old params.yaml must not fall back to defaults silently."""
    for key, value in raw.items():
        path = FLAT_KEYS.get(key)
        section = ModelConfig.model_fields.get(key)
        if path is not None and len(path) > 1 and (section is None or not isinstance(value, dict)):
            raise ConfigError(f"{source}: model.{key} is now model.{'.'.join(path)} "
                              "(model settings are grouped in sections)")
