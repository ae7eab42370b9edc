"""Where predict's time goes, and what each bank-search option costs and loses.

    python bench/bench_search.py --data ../shared/data/magnetic-tile/split.csv --model MODEL_DIR

``--model`` is a model directory fitted on the train split (``exdd fit --data ... --out``
with the default params for the figures in docs/benchmarks.md). The test
images are decoded and embedded once; then

- per-stage costs (wall and CPU ms per image, two cores): decode + resize, the bare
  backbone forward, aggregation + projection, the search of both banks, map upsampling +
  smoothing + image score;
- per search option (exact, HNSW at several settings, and faiss IVF for comparison, which
  exdd does not offer): search cost, recall of the true nearest normal patch, and the five
  metrics of the calibrated rule on the test split.
"""

from __future__ import annotations

from exdd import runtime

runtime.configure()  # an entry point: before torch or faiss load (exdd/runtime.py)

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import faiss
import numpy as np
import torch

from exdd.detector.index import NearestNeighbourIndex
from exdd.detector.settings import SearchSettings
from exdd.data.readers import load_samples, read_image
from exdd.evaluation.evaluate import ground_truth
from exdd.evaluation.metrics import compute_metrics
from exdd.detector.model import ExDD
from exdd.detector.scoring import Bank, bank_distances, top_k_mean

from bench_detector import KEYS  # bench/ is on sys.path when run as a script

HNSW = ((16, 8), (16, 16), (32, 64))
IVF_LIST_SIZE = 50
IVF_PROBES = (1, 2, 4)


def clock(fn: Callable[[], object], n: int, repeats: int = 3) -> tuple[float, float]:
    """Median (wall, CPU) milliseconds per item over ``repeats`` runs of ``fn``."""
    runs = []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        runs.append(((time.perf_counter() - wall) * 1e3 / n, (time.process_time() - cpu) * 1e3 / n))
    return float(np.median([r[0] for r in runs])), float(np.median([r[1] for r in runs]))


class IVFIndex(NearestNeighbourIndex):
    """faiss IndexIVFFlat behind the scorer's search interface (for comparison only)."""

    def __init__(self, bank: np.ndarray, nprobe: int) -> None:
        super().__init__(SearchSettings(use_gpu=False))
        lists = max(1, len(bank) // IVF_LIST_SIZE)
        index = faiss.IndexIVFFlat(faiss.IndexFlatL2(bank.shape[1]), bank.shape[1], lists)
        index.cp.seed = 0
        index.train(bank)
        index.add(bank)
        index.nprobe = nprobe
        self._index = index


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--model", required=True, help="model directory fitted on the train split")
    ap.add_argument("--json", help="write all figures here")
    args = ap.parse_args()

    model = ExDD.load(args.model)
    test = load_samples(args.data, "test")
    paths = [s.image for s in test]
    (h, w), bs = model.input_size, model.model.runtime.batch_size
    n = len(paths)
    print(f"{n} test images at {h}x{w}, batch {bs}, torch threads {torch.get_num_threads()}")

    decoded: list[np.ndarray] = []  # decoding alone is timed: stacking would add page faults
    stages = {"decode + resize (one thread)":
              clock(lambda: decoded.extend(read_image(p, h, w) for p in paths), n, 1)}
    images = torch.from_numpy(np.stack(decoded)).permute(0, 3, 1, 2)
    batches = [images[i:i + bs] for i in range(0, n, bs)]
    embedder = model.embedder
    with torch.inference_mode():
        clock(lambda: [embedder.backbone(b) for b in batches], n, 1)  # warm-up
        stages["backbone forward"] = clock(lambda: [embedder.backbone(b) for b in batches], n)
        maps = [embedder.backbone(b) for b in batches]
        stages["aggregation + projection"] = clock(lambda: [embedder.aggregate(m) for m in maps], n)
        feats = [embedder.aggregate(m).numpy() for m in maps]
    del maps
    scorer = model.scorer()
    distances = [bank_distances(f.reshape(-1, f.shape[-1]), scorer.normal, scorer.defect)
                 for f in feats]
    stages[f"search, both banks ({model.model.search.index})"] = clock(
        lambda: [bank_distances(f.reshape(-1, f.shape[-1]), scorer.normal, scorer.defect)
                 for f in feats], n)
    grids = [(d_n / (d_p + scorer.defect.tau)).reshape(f.shape[:3])
             for f, (d_n, d_p) in zip(feats, distances)]
    stages["map upsampling + smoothing + score"] = clock(
        lambda: [top_k_mean(scorer.upsampler(g), model.model.scoring.top_k_fraction)
                 for g in grids], n)
    for name, (wall, cpu) in stages.items():
        print(f"  {name:40s} {wall:6.2f} ms wall  {cpu:6.2f} ms CPU per image")

    masks = ground_truth(model, test)
    labels = np.array([s.label for s in test])
    queries = np.concatenate([f.reshape(-1, f.shape[-1]) for f in feats])
    exact = scorer.normal.index.search(queries, 1)[1][:, 0]
    options = {"exact (flat)": model.with_predict_settings(search={"index": "flat"}).scorer()}
    for m, ef in HNSW:
        options[f"hnsw M={m} ef={ef}"] = model.with_predict_settings(
            search={"index": "hnsw", "hnsw_m": m, "hnsw_ef": ef}).scorer()
    for probe in IVF_PROBES:
        options[f"ivf nprobe={probe} (lists of ~{IVF_LIST_SIZE})"] = replace(
            scorer,
            normal=Bank(model.bank_normal_, IVFIndex(model.bank_normal_, probe), model.tau_normal_),
            defect=Bank(model.bank_defect_, IVFIndex(model.bank_defect_, probe), model.tau_defect_),
        )
    results = {}
    for name, option in options.items():
        cost = clock(lambda: [bank_distances(f.reshape(-1, f.shape[-1]), option.normal,
                                             option.defect) for f in feats], n)
        recall = float(np.mean(option.normal.index.search(queries, 1)[1][:, 0] == exact))
        out = [option(f) for f in feats]
        metrics = compute_metrics(np.concatenate([o[0] for o in out]), labels,
                                  np.concatenate([o[1] for o in out]), masks)
        results[name] = {"search_ms_wall": cost[0], "search_ms_cpu": cost[1], "recall": recall,
                         **{k: metrics[k] for k in KEYS}}
        print(f"  {name:34s} search {cost[0]:6.2f} ms wall {cost[1]:6.2f} ms CPU/img  "
              f"recall {recall:.4f}  " + "  ".join(f"{k} {metrics[k]:.4f}" for k in KEYS))
    if args.json:
        Path(args.json).write_text(json.dumps({"stages": stages, "search": results}, indent=2))


if __name__ == "__main__":
    main()
