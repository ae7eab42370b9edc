"""Peer benchmark: anomalib 2.7.0's PatchCore on exactly exdd's backbone features and input size.

    make bench-venv
    MALLOC_MMAP_THRESHOLD_=1048576 .bench-venv/bin/python bench/peer_anomalib.py --data ../shared/data/mvtec3d-tire --json a.json

Runs only in the benchmark venv (bench/requirements-peers.txt; anomalib is never a
dependency of exdd). anomalib's ``PatchcoreModel`` keeps everything of its own (3x3
average pooling, bilinear resize of the deeper map, k-center-greedy coreset over a sparse
random projection, reweighted image score, nearest upsampling + Gaussian blur sigma 4)
except its feature extractor, which is exdd's backbone: same weights, same normalisation,
images read by ``exdd.data.readers.read_image``. Metrics come from ``exdd.evaluation.metrics`` against
masks read as ``exdd.evaluation.evaluate`` reads them, so the figures compare with exdd's own.

anomalib's k-center greedy is one full pass over all train patches per selected patch: on
2 CPU cores, tire (215k patches) at 1 % took 5-7 min; magnetic-tile (682k) costs about
10x that per ratio, and 10 % another 10x: run those where a GPU is at hand.
"""

from __future__ import annotations

from exdd import runtime

runtime.configure()  # an entry point: before torch or faiss load (exdd/runtime.py)

import argparse
import json
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import anomalib
import numpy as np
import torch
from anomalib.models.image.patchcore.torch_model import PatchcoreModel
from torch import nn

from exdd.detector.backbones import Backbone, load_backbone
from exdd.config import load_params
from exdd.data.readers import load_samples
from exdd.evaluation.evaluate import ground_truth
from exdd.evaluation.metrics import compute_metrics
from exdd.detector.model import ExDD

from bench_detector import KEYS, preload  # bench/ is on sys.path when run as a script

# anomalib's default layer names; exdd's stride-8 and stride-16 taps play their roles.
LAYERS = ("layer2", "layer3")
BATCH = 8
# A small timm model for PatchcoreModel's constructor; it is replaced before any use.
PLACEHOLDER_BACKBONE = "resnet18"


class ExddFeatures(nn.Module):
    """exdd's backbone in the shape anomalib's feature extractor has: {layer: map}.

    Like anomalib's TimmFeatureExtractor it puts the backbone in eval mode on every call,
    so PatchcoreModel.train() (how embeddings are collected) never touches BatchNorm.
    """

    def __init__(self, backbone: Backbone) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        self.backbone.eval()
        return dict(zip(LAYERS, self.backbone(x), strict=True))


def peer_model(backbone: Backbone, num_neighbors: int) -> PatchcoreModel:
    model = PatchcoreModel(layers=LAYERS, backbone=PLACEHOLDER_BACKBONE, pre_trained=False,
                           num_neighbors=num_neighbors)
    model.feature_extractor = ExddFeatures(backbone).eval()
    return model


def batches(ref: ExDD, paths: Sequence[Path]) -> Iterator[torch.Tensor]:
    """(B, 3, H, W) in [0, 1], decoded and laid out as exdd's predict does, 8 at a time."""
    for i in range(0, len(paths), BATCH):
        yield preload(ref, list(paths[i:i + BATCH]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="KSDD2-layout folder or manifest CSV")
    ap.add_argument("--params", help="params file for the mask threshold (default: ./params.yaml)")
    ap.add_argument("--height", type=int, required=True,
                    help="input height: the exdd model's (exdd picks it from the data at fit)")
    ap.add_argument("--width", type=int, required=True, help="input width, likewise")
    ap.add_argument("--backbone", default="efficientnet_lite0")
    ap.add_argument("--coreset", type=float, nargs="+", default=[0.1, 0.01],
                    help="coreset sampling ratios, each on the same train features "
                         "(anomalib's default is 0.1)")
    ap.add_argument("--neighbors", type=int, default=9, help="anomalib's num_neighbors")
    ap.add_argument("--seed", type=int, default=0, help="seeds the coreset's start and projection")
    ap.add_argument("--json", help="write all figures here")
    args = ap.parse_args()

    data = load_params(args.params).data
    data = data.model_copy(update={"image_height": args.height, "image_width": args.width})
    ref = ExDD(data=data)  # input size and mask threshold only; never fitted
    train = [s for s in load_samples(args.data, "train") if s.label == 0]
    test = load_samples(args.data, "test")
    size = f"{data.image_height}x{data.image_width}"
    print(f"anomalib {anomalib.__version__} PatchCore on {args.backbone} at {size} (H x W); "
          f"train {len(train)} normal, test {len(test)}; torch threads {torch.get_num_threads()}")

    model = peer_model(load_backbone(args.backbone), args.neighbors)
    start = time.perf_counter()
    model.train()
    with torch.no_grad():
        for batch in batches(ref, [s.image for s in train]):
            model(batch)
    store = list(model.embedding_store)
    features_s = time.perf_counter() - start
    masks = ground_truth(ref, test)
    labels = np.array([s.label for s in test])
    figures: dict[str, object] = {
        "anomalib": anomalib.__version__, "data": args.data, "height": data.image_height,
        "width": data.image_width, "backbone": args.backbone, "neighbors": args.neighbors,
        "train_normal": len(train), "test": len(test),
        "train_patches": sum(len(e) for e in store), "features_seconds": features_s, "runs": {},
    }
    print(f"train features {features_s:.1f}s: {figures['train_patches']} patches of "
          f"{store[0].shape[1]} dims")

    for ratio in args.coreset:
        torch.manual_seed(args.seed)
        np.random.seed(args.seed)  # the sparse projection draws its columns through numpy
        model.embedding_store = list(store)
        model.train()
        start = time.perf_counter()
        with torch.no_grad():
            model.subsample_embedding(ratio)
        coreset_s = time.perf_counter() - start
        model.eval()
        scores, maps = [], []
        start = time.perf_counter()
        with torch.no_grad():
            for batch in batches(ref, [s.image for s in test]):
                out = model(batch)
                scores.append(out.pred_score.cpu().numpy())
                maps.append(out.anomaly_map[:, 0].cpu().numpy())
        predict_s = time.perf_counter() - start
        metrics = compute_metrics(np.concatenate(scores), labels, np.concatenate(maps), masks)
        run = {**{k: metrics[k] for k in KEYS}, "bank": len(model.memory_bank),
               "coreset_seconds": coreset_s, "predict_seconds": predict_s}
        figures["runs"][str(ratio)] = run
        print(f"coreset {ratio}: bank {run['bank']}, coreset {coreset_s:.1f}s, predict "
              f"{predict_s:.1f}s; " + "  ".join(f"{k} {metrics[k]:.4f}" for k in KEYS))

    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
