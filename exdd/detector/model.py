"""The ExDD detector as a scikit-learn-style estimator.

The constructor holds settings, ``fit`` builds the two memory banks from training images
(normal images -> M_N; patches under the defect masks of labelled and synthetic defect
images -> M_P), ``predict`` is pure: it reads images and returns scores and maps.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from exdd.detector.backbones import load_backbone
from exdd.detector.banks import BankBuilder, defect_cells
from exdd.detector.index import NearestNeighbourIndex
from exdd.config import DataConfig, ModelConfig
from exdd.data.readers import Sample, read_image, read_mask
from exdd.errors import DataError, ModelError
from exdd.detector.features import PatchEmbedder, random_projection
from exdd.fsutil import sha256_file
from exdd.detector.geometry import resolve_input_size
from exdd.detector.prefetch import ordered_map, prefetched
from exdd.detector.scoring import Bank, MapUpsampler, Scorer

IO_THREADS = 4
DECODE_AHEAD_BATCHES = 2  # images decoded ahead of the backbone, in batches (bounds memory)
PREFETCH_BATCHES = 2  # feature batches computed ahead of the bank search in predict
FITTED_STATE = ("projection_", "bank_normal_", "bank_defect_", "tau_normal_", "tau_defect_",
                "grid_", "data_hashes_")
# Settings that only change how a fitted model predicts: scoring rule, search, batching.
PREDICT_SETTINGS = frozenset({
    "single_bank", "scoring", "defect_weight", "image_score", "knn", "smoothing_sigma",
    "top_k_fraction", "ratio_eps",
    "nn_use_gpu", "nn_batch_size", "nn_index", "nn_hnsw_m", "nn_hnsw_ef", "batch_size", "device",
})


@dataclass(frozen=True)
class Prediction:
    """Image scores (N,) and anomaly maps (N, H, W) at the model's input size."""

    scores: np.ndarray
    maps: np.ndarray


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ModelError("model.device is 'cuda' but no CUDA device is available")
    return torch.device(name)


def data_fingerprint(samples: Sequence[Sample]) -> str:
    """sha256 over the sorted content hashes of images and masks: names do not matter."""
    digests = sorted(
        f"{sha256_file(s.image)}:{sha256_file(s.mask) if s.mask else '-'}:{s.label}" for s in samples
    )
    return hashlib.sha256("\n".join(digests).encode()).hexdigest()


class ExDD:
    """Dual memory-bank detector (ExDD); ``single_bank`` gives PatchCore for comparison."""

    def __init__(self, model: ModelConfig | None = None, data: DataConfig | None = None) -> None:
        self.model = model or ModelConfig()
        self.data = data or DataConfig()
        self._embedder: PatchEmbedder | None = None
        self._scorer: Scorer | None = None

    # ---------------------------------------------------------------- state
    projection_: np.ndarray
    bank_normal_: np.ndarray
    bank_defect_: np.ndarray
    tau_normal_: float
    tau_defect_: float
    data_hashes_: dict[str, str]

    @property
    def is_fitted(self) -> bool:
        return hasattr(self, "bank_normal_")

    @property
    def embedder(self) -> PatchEmbedder:
        if self._embedder is None:
            backbone = load_backbone(self.model.backbone, self.model.backbone_weights)
            if not hasattr(self, "projection_"):
                self.projection_ = random_projection(
                    sum(backbone.channels), self.model.projection_dim, self.model.seed
                )
            self._embedder = PatchEmbedder(
                backbone, self.model.aggregation_kernel, self.projection_,
                resolve_device(self.model.device),
            )
        return self._embedder

    # ---------------------------------------------------------------- images
    def _image_batches(self, paths: Sequence[Path], desc: str) -> Iterator[torch.Tensor]:
        """Batches of (B, 3, H, W) tensors, decoded ahead on a few threads."""
        h, w = self.data.input_size
        bs = self.model.batch_size
        images = ordered_map(lambda p: read_image(p, h, w), paths, IO_THREADS,
                             ahead=DECODE_AHEAD_BATCHES * bs)
        with tqdm(total=len(paths), desc=desc, unit="img", leave=False) as bar:
            batch: list[np.ndarray] = []
            for img in images:
                batch.append(img)
                if len(batch) == bs:
                    yield torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2)
                    bar.update(len(batch))
                    batch = []
            if batch:
                yield torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2)
                bar.update(len(batch))

    def _patches(self, paths: Sequence[Path], desc: str) -> Iterator[np.ndarray]:
        """Per batch, patch features (B, h, w, D) as float32 numpy."""
        for batch in self._image_batches(paths, desc):
            yield self.embedder(batch).float().cpu().numpy()

    def _defect_cells(self, sample: Sample, grid: tuple[int, int]) -> np.ndarray:
        """Which grid cells of an image lie under its (dilated) defect mask."""
        h, w = self.data.input_size
        mask = read_mask(sample.mask, h, w, self.data.mask_threshold, image_path=sample.image)
        return defect_cells(mask[None], grid, self.model.mask_dilation)[0]

    # ---------------------------------------------------------------- fit
    def _builder(self, fraction: float, min_keep: int = 1) -> BankBuilder:
        return BankBuilder(fraction, self.model, min_keep)

    def fit(self, train: Sequence[Sample], synthetic: Sequence[Sample] = ()) -> "ExDD":
        """Build M_N from normal images and M_P from patches under defect masks."""
        normals = [s for s in train if s.label == 0]
        defects = [s for s in train if s.label == 1 and s.mask is not None] + list(synthetic)
        if not normals:
            raise DataError("no defect-free training images: M_N cannot be built")
        if not self.model.single_bank and not defects:
            raise DataError("no defect images with masks for M_P (use --single-bank for PatchCore)")
        backbone = self.embedder.backbone
        self.data = resolve_input_size(self.data, [s.image for s in train], backbone.stride,
                                       backbone.min_size, backbone.name)
        self.grid_ = self._grid()
        timings = {"features": 0.0, "coreset": 0.0, "indexing": 0.0}
        normal = self._builder(self.model.coreset_normal)
        clock = time.perf_counter()
        for batch in self._patches([s.image for s in normals], "normal"):
            normal.add(batch)
        self.bank_normal_, self.tau_normal_ = normal.finish()
        if self.model.single_bank:
            self.bank_defect_ = np.zeros((0, self.model.projection_dim), np.float32)
            self.tau_defect_ = 1.0
            builders = [normal]
        else:
            defect = self._builder(self.model.coreset_defect, self.model.coreset_defect_min)
            for sample, feats in zip(defects, self._iter_images(defects, "defect")):
                defect.add(feats[self._defect_cells(sample, self.grid_)])
            if defect.seen == 0:
                raise DataError("defect masks cover no patch: M_P would be empty")
            self.bank_defect_, self.tau_defect_ = defect.finish()
            builders = [normal, defect]
        for b in builders:
            for key, seconds in b.timings.items():
                timings[key] += seconds
        timings["features"] = time.perf_counter() - clock - timings["coreset"] - timings["indexing"]
        self.fit_timings_ = timings
        self.data_hashes_ = {
            "normal": data_fingerprint(normals),
            "defect": data_fingerprint(defects) if defects else "",
        }
        self._scorer = None
        return self

    def _iter_images(self, samples: Sequence[Sample], desc: str) -> Iterator[np.ndarray]:
        for batch in self._patches([s.image for s in samples], desc):
            yield from batch

    def _grid(self) -> tuple[int, int]:
        probe = torch.zeros(1, 3, *self.data.input_size)
        return tuple(self.embedder(probe).shape[1:3])  # type: ignore[return-value]

    # ---------------------------------------------------------------- predict
    def scorer(self) -> Scorer:
        """The banks' search indexes and the map upsampler, built once per fitted model."""
        if not self.is_fitted:
            raise ModelError("model is not fitted")
        if self._scorer is None:
            normal = NearestNeighbourIndex.from_config(self.model).fit(self.bank_normal_)
            defect = None
            if not self.model.single_bank:
                index = NearestNeighbourIndex.from_config(self.model).fit(self.bank_defect_)
                defect = Bank(self.bank_defect_, index, self.tau_defect_)
            size = self.data.input_size
            self._scorer = Scorer(Bank(self.bank_normal_, normal, self.tau_normal_), defect,
                                  MapUpsampler(self.grid_, size, self.model.smoothing_sigma),
                                  self.model)
        return self._scorer

    def with_predict_settings(self, **changes: object) -> "ExDD":
        """A copy that shares this fitted model's banks and backbone but predicts with other
        settings (scoring rule, search index, smoothing): compare them without refitting."""
        unknown = sorted(set(changes) - PREDICT_SETTINGS)
        if unknown:
            raise ModelError(f"{', '.join(unknown)}: not predict-time settings (they need a refit)")
        if not self.is_fitted:
            raise ModelError("model is not fitted")
        other = ExDD(ModelConfig(**{**self.model.model_dump(), **changes}), self.data)
        for name in FITTED_STATE:
            setattr(other, name, getattr(self, name))
        if "device" not in changes:
            other._embedder = self._embedder
        return other

    def predict(self, paths: Sequence[Path]) -> Prediction:
        """Scores and anomaly maps for images on disk (any size or mode: they are resized)."""
        if not paths:
            raise DataError("no images to predict")
        scorer = self.scorer()
        scores = np.empty(len(paths), np.float64)
        maps = np.empty((len(paths), *self.data.input_size), np.float32)
        i = 0
        for batch in prefetched(self._patches(list(paths), "predict"), PREFETCH_BATCHES):
            n = len(batch)
            scores[i:i + n], maps[i:i + n] = scorer(batch)
            i += n
        return Prediction(scores, maps)

    # ---------------------------------------------------------------- persistence
    def save(self, directory: str | Path) -> str:
        """Write the model directory atomically; returns the model hash."""
        from exdd.detector.modelio import save_model

        return save_model(self, directory)

    @classmethod
    def load(cls, directory: str | Path) -> "ExDD":
        """Load a model directory, verifying every file's sha256."""
        from exdd.detector.modelio import load_model

        return load_model(directory)
