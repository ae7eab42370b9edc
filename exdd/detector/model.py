"""The ExDD detector as a scikit-learn-style estimator.

The constructor holds settings, ``fit`` builds the two memory banks from training images
(normal images -> M_N; patches under the defect masks of labelled and synthetic defect
images -> M_P) into one ``FittedState``, ``score`` is pure: RGB arrays at the input size in,
scores and maps out. ``predict`` reads image files and scores them the same way.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from exdd.data.readers import Sample, read_image, read_mask
from exdd.detector.backbones import load_backbone
from exdd.detector.banks import BankBuilder, defect_cells
from exdd.detector.features import PatchEmbedder, random_projection
from exdd.detector.geometry import resolve_input_size
from exdd.detector.index import NearestNeighbourIndex
from exdd.detector.modelio import load_model, save_model
from exdd.detector.prefetch import ordered_map, prefetched
from exdd.detector.scoring import Bank, MapUpsampler, Scorer
from exdd.detector.selection import choose, plan
from exdd.detector.settings import DataConfig, ModelConfig, predict_time_sections
from exdd.detector.state import FittedState
from exdd.errors import DataError, ModelError
from exdd.fsutil import sha256_file

IO_THREADS = 4
DECODE_AHEAD_BATCHES = 2  # images decoded ahead of the backbone, in batches (bounds memory)
PREFETCH_BATCHES = 2  # feature batches computed ahead of the bank search in predict


@dataclass(frozen=True)
class Prediction:
    """Image scores (N,) and anomaly maps (N, H, W) at the model's input size."""

    scores: np.ndarray
    maps: np.ndarray


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ModelError("model.runtime.device is 'cuda' but no CUDA device is available")
    return torch.device(name)


def data_fingerprint(samples: Sequence[Sample]) -> str:
    """sha256 over the sorted content hashes of images and masks: names do not matter."""
    digests = sorted(
        f"{sha256_file(s.image)}:{sha256_file(s.mask) if s.mask else '-'}:{s.label}" for s in samples
    )
    return hashlib.sha256("\n".join(digests).encode()).hexdigest()


class ExDD:
    """Dual memory-bank detector (ExDD); ``scoring.single_bank`` gives PatchCore for comparison."""

    def __init__(self, model: ModelConfig | None = None, data: DataConfig | None = None) -> None:
        self.model = model or ModelConfig()
        self.data = data or DataConfig()
        self.state: FittedState | None = None
        self._embedder: PatchEmbedder | None = None
        self._scorer: Scorer | None = None

    @classmethod
    def from_state(cls, state: FittedState) -> ExDD:
        """The fitted model of ``state`` (as loaded from a model directory)."""
        model = cls(state.model, state.data)
        model.state = state
        return model

    # ---------------------------------------------------------------- state
    @property
    def is_fitted(self) -> bool:
        return self.state is not None

    def _fitted(self) -> FittedState:
        if self.state is None:
            raise ModelError("model is not fitted")
        return self.state

    @property
    def bank_normal_(self) -> np.ndarray:
        return self._fitted().bank_normal

    @property
    def bank_defect_(self) -> np.ndarray:
        return self._fitted().bank_defect

    @property
    def tau_normal_(self) -> float:
        return self._fitted().tau_normal

    @property
    def tau_defect_(self) -> float:
        return self._fitted().tau_defect

    @property
    def grid_(self) -> tuple[int, int]:
        return self._fitted().grid

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) of the images ``score`` takes; known once fitted."""
        return self.data.input_size

    @property
    def embedder(self) -> PatchEmbedder:
        if self._embedder is None:
            features = self.model.features
            if features.aggregation_padding == "auto":
                raise ModelError("features.aggregation_padding 'auto' is chosen at fit: "
                                 "fit the model first, or set zeros or inside")
            backbone = load_backbone(features.backbone, features.backbone_weights)
            projection = self.state.projection if self.state is not None else random_projection(
                sum(backbone.channels), features.projection_dim, self.model.seed)
            self._embedder = PatchEmbedder(backbone, features.aggregation_kernel, projection,
                                           resolve_device(self.model.runtime.device),
                                           features.aggregation_padding)
        return self._embedder

    # ---------------------------------------------------------------- images
    def _batches(self, images: Iterable[np.ndarray], total: int, desc: str
                 ) -> Iterator[torch.Tensor]:
        """(B, 3, H, W) tensors of ``runtime.batch_size`` images (H, W, 3) each."""
        bs = self.model.runtime.batch_size
        with tqdm(total=total, desc=desc, unit="img", leave=False) as bar:
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

    def _embed(self, images: Iterable[np.ndarray], total: int, desc: str
               ) -> Iterator[np.ndarray]:
        """Per batch, patch features (B, h, w, D) as float32 numpy."""
        for batch in self._batches(images, total, desc):
            yield self.embedder(batch).float().cpu().numpy()

    def patch_features(self, paths: Sequence[Path], desc: str = "features"
                       ) -> Iterator[np.ndarray]:
        """Per batch of image files, their patch features (B, h, w, D): what the banks hold
        and the scorer compares. Images are decoded ahead on a few threads, resized to the
        input size."""
        h, w = self.data.input_size
        images = ordered_map(lambda p: read_image(p, h, w), paths, IO_THREADS,
                             ahead=DECODE_AHEAD_BATCHES * self.model.runtime.batch_size)
        return self._embed(images, len(paths), desc)

    def _mask(self, sample: Sample) -> np.ndarray:
        """A defect image's mask at the input size, (H, W) bool."""
        h, w = self.data.input_size
        return read_mask(sample.mask, h, w, self.data.mask_threshold, image_path=sample.image)

    # ---------------------------------------------------------------- fit
    def bank_builder(self, fraction: float, min_keep: int = 1) -> BankBuilder:
        """The builder ``fit`` fills for one bank (a subclass may memoise it)."""
        m = self.model
        return BankBuilder(fraction, m.features.projection_dim, m.seed, m.banks, m.coreset,
                           m.search, min_keep)

    def fit(self, train: Sequence[Sample], synthetic: Sequence[Sample] = ()) -> "ExDD":
        """Build M_N from normal images and M_P from patches under defect masks; with
        ``scoring.rule: auto``, choose the scoring rules (and whether M_P keeps the
        ``synthetic`` defects) on held-out training images."""
        normals = [s for s in train if s.label == 0]
        real = [s for s in train if s.label == 1 and s.mask is not None]
        defects = real + list(synthetic)
        single_bank = self.model.scoring.single_bank
        if not normals:
            raise DataError("no defect-free training images: M_N cannot be built")
        if not single_bank and not defects:
            raise DataError("no defect images with masks for M_P (use --single-bank for PatchCore)")
        auto = self.model.scoring.rule == "auto"
        held = (plan(len(normals), len(real), self.model.selection, self.model.seed)
                if auto and not single_bank else None)
        self.model = self.model.with_padding(validated=not auto or held is not None)
        backbone = self.embedder.backbone
        self.data = resolve_input_size(self.data, [s.image for s in train], backbone.stride,
                                       backbone.min_size, backbone.name)
        grid = self._grid()
        timings = {"features": 0.0, "coreset": 0.0, "indexing": 0.0, "selection": 0.0}
        coreset = self.model.coreset
        out = set() if held is None else set(held.normal.tolist())
        normal = self.bank_builder(coreset.normal)
        clock = time.perf_counter()
        held_normals: list[np.ndarray] = []
        first = 0
        for batch in self.patch_features([s.image for s in normals], "normal"):
            ids = np.arange(first, first + len(batch))
            first += len(batch)
            normal.add(batch, np.repeat(ids, batch.shape[1] * batch.shape[2]))
            held_normals.extend(f.copy() for i, f in zip(ids, batch) if i in out)
        bank_normal, tau_normal = normal.finish()
        if held is not None:  # M_N' = M_N less the held-out images' members
            normal_index = NearestNeighbourIndex(self.model.search).fit(
                bank_normal[~np.isin(normal.owners, held.normal)])
        choice = None
        if single_bank:
            bank_defect = np.zeros((0, self.model.features.projection_dim), np.float32)
            tau_defect = 1.0
            builders = [normal]
        else:
            defect = self.bank_builder(coreset.defect, coreset.defect_min)
            per_image: list[np.ndarray] = []
            scored: dict[int, tuple[np.ndarray, np.ndarray]] = {}
            for i, (sample, feats) in enumerate(zip(defects, self._iter_images(defects, "defect"))):
                mask = self._mask(sample)
                patches = feats[defect_cells(mask[None], grid, self.model.banks.mask_dilation)[0]]
                defect.add(patches)
                if held is not None:
                    per_image.append(patches)
                    if i < len(real) and held.scored[i]:
                        scored[i] = (feats, mask)
            if defect.seen == 0:
                raise DataError("defect masks cover no patch: M_P would be empty")
            if held is not None:
                start = time.perf_counter()
                choice = choose(held, normal_index, np.stack(held_normals), per_image[:len(real)],
                                per_image[len(real):], scored, self._defect_bank,
                                MapUpsampler(grid, self.data.input_size,
                                             self.model.scoring.smoothing_sigma),
                                self.model.scoring, self.model.selection)
                timings["selection"] = time.perf_counter() - start
                if not choice.keep_synthetic:  # M_P of the real defects alone
                    defect = self.bank_builder(coreset.defect, coreset.defect_min)
                    defect.add(np.concatenate(per_image[:len(real)]))
            bank_defect, tau_defect = defect.finish()
            builders = [normal, defect]
        if auto:
            sel = self.model.selection
            rule, image = ((sel.fallback, sel.fallback_image) if choice is None
                           else (choice.rule, choice.image_rule))
            self.model = self.model.updated(scoring={
                "rule": rule, "image_rule": "same" if image == rule else image})
        for b in builders:
            for key, seconds in b.timings.items():
                timings[key] += seconds
        timings["features"] = (time.perf_counter() - clock - timings["coreset"]
                               - timings["indexing"] - timings["selection"])
        self.fit_timings_ = timings
        self.state = FittedState(
            model=self.model, data=self.data, projection=self.embedder.projection_matrix,
            bank_normal=bank_normal, bank_defect=bank_defect, grid=grid,
            tau_normal=tau_normal, tau_defect=tau_defect,
            data_hashes={"normal": data_fingerprint(normals),
                         "defect": data_fingerprint(defects) if defects else ""},
            selection=None if not auto or single_bank else (
                {"rule": self.model.scoring.rule, "image_rule": self.model.scoring.image_rule,
                 "fallback": True} if choice is None
                else choice.report()))
        self._scorer = None
        return self

    def indexed_bank(self, patches: np.ndarray, fraction: float, min_keep: int = 1
                     ) -> tuple[NearestNeighbourIndex, float]:
        """A bank of (n, D) ``patches`` as fit builds one, with its search index and tau:
        what held-out images are scored against (here, and in bench/select_defaults.py)."""
        builder = self.bank_builder(fraction, min_keep)
        builder.add(patches)
        bank, tau = builder.finish()
        return NearestNeighbourIndex(self.model.search).fit(bank), tau

    def _defect_bank(self, patches: np.ndarray) -> tuple[NearestNeighbourIndex, float]:
        """An M_P' sized as the final M_P: for validation folds."""
        return self.indexed_bank(patches, self.model.coreset.defect, self.model.coreset.defect_min)

    def _iter_images(self, samples: Sequence[Sample], desc: str) -> Iterator[np.ndarray]:
        for batch in self.patch_features([s.image for s in samples], desc):
            yield from batch

    def _grid(self) -> tuple[int, int]:
        probe = torch.zeros(1, 3, *self.data.input_size)
        return tuple(self.embedder(probe).shape[1:3])  # type: ignore[return-value]

    # ---------------------------------------------------------------- predict
    def scorer(self) -> Scorer:
        """The banks' search indexes and the map upsampler, built once per fitted model."""
        state = self._fitted()
        if self._scorer is None:
            search, rule = self.model.search, self.model.scoring
            normal = Bank(state.bank_normal,
                          NearestNeighbourIndex(search).fit(state.bank_normal), state.tau_normal)
            defect = None
            if not rule.single_bank:
                defect = Bank(state.bank_defect, NearestNeighbourIndex(search).fit(
                    state.bank_defect), state.tau_defect)
            upsampler = MapUpsampler(state.grid, state.data.input_size, rule.smoothing_sigma)
            self._scorer = Scorer(normal, defect, upsampler, rule)
        return self._scorer

    def with_predict_settings(self, **changes: dict[str, object]) -> "ExDD":
        """A copy that shares this fitted model's banks and backbone but predicts with other
        settings, e.g. ``search={"index": "hnsw"}``: compare them without refitting.

        Each keyword is a predict-time section of ``ModelConfig`` (scoring, search,
        runtime), its value the settings of that section to change.
        """
        allowed = predict_time_sections()
        unknown = sorted(set(changes) - set(allowed))
        if unknown:
            raise ModelError(f"{', '.join(unknown)}: not predict-time settings (they need a "
                             f"refit; predict-time sections: {', '.join(allowed)})")
        state = self._fitted()
        model = self.model.updated(**changes)
        if model.scoring.rule == "auto":
            raise ModelError("scoring.rule 'auto' is chosen at fit: a fitted model predicts "
                             "with a concrete rule (weighted, boosted, normal, calibrated, reference)")
        other = ExDD.from_state(replace(state, model=model))
        if model.runtime.device == self.model.runtime.device:
            other._embedder = self._embedder
        return other

    def score(self, images: Sequence[np.ndarray] | np.ndarray) -> Prediction:
        """Scores and anomaly maps of RGB images (H, W, 3) at ``input_size``: uint8, or
        float32 in [0, 1] as exdd.data.readers.rgb_array gives (which also resizes)."""
        if len(images) == 0:
            raise DataError("no images to score")
        self.scorer()  # not fitted: fail before embedding
        size = self.input_size
        inputs = (_as_input(i, img, size) for i, img in enumerate(images))
        return self._score_features(self._embed(inputs, len(images), "score"), len(images))

    def predict(self, paths: Sequence[Path]) -> Prediction:
        """Scores and anomaly maps for images on disk (any size or mode: they are resized)."""
        if not paths:
            raise DataError("no images to predict")
        self.scorer()  # not fitted: fail before reading
        return self._score_features(self.patch_features(list(paths), "predict"), len(paths))

    def _score_features(self, features: Iterator[np.ndarray], total: int) -> Prediction:
        """Scores and maps of ``total`` images from their patch features, batch by batch;
        the next batch is embedded while this one is searched."""
        scorer = self.scorer()
        scores = np.empty(total, np.float64)
        maps = np.empty((total, *self.input_size), np.float32)
        i = 0
        for batch in prefetched(features, PREFETCH_BATCHES):
            n = len(batch)
            scores[i:i + n], maps[i:i + n] = scorer(batch)
            i += n
        return Prediction(scores, maps)

    # ---------------------------------------------------------------- persistence
    def save(self, directory: str | Path) -> str:
        """Write the model directory atomically; returns the model hash."""
        if self.state is None:
            raise ModelError("cannot save a model that is not fitted")
        return save_model(self.state, directory)

    @classmethod
    def load(cls, directory: str | Path) -> "ExDD":
        """Load a model directory, verifying every file's sha256."""
        return cls.from_state(load_model(directory))


def _as_input(index: int, image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """One image for the backbone: (H, W, 3) float32 in [0, 1] at the input size."""
    image = np.asarray(image)
    if image.shape != (*size, 3):
        raise DataError(f"image {index}: shape {image.shape} is not the model's input "
                        f"{(*size, 3)}; resize it with exdd.data.readers.rgb_array")
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255.0
    return np.asarray(image, dtype=np.float32)
