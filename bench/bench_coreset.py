"""Coreset benchmark: time and coverage radius of the greedy sampler vs plain farthest-point.

    python bench/bench_coreset.py --data ../shared/data/magnetic-tile/split.csv \\
        --cache /tmp/mt_patches.npy                       # real patches (~680k x 128), 1%
    python bench/bench_coreset.py --n 100000 --exact       # synthetic, with exact greedy

Patches: with ``--data``, the patch features of the normal training images, as the
detector computes them (backbone, aggregation, projection from params.yaml / defaults);
``--cache`` keeps them in a .npy file between runs. Without it, a synthetic stand-in: a
mixture of Gaussian clusters of uneven size, each with its own orientation and a
power-law spectrum (standard deviation along the i-th axis ~ i^-decay).

Exact greedy is the plain traversal (one in-place pass over all points per member) on
the same projected features from the same start point. It takes minutes at full size:
``--exact`` runs it on the first ``--exact-n`` patches only (default: all).
"""

from __future__ import annotations

from exdd import runtime

runtime.configure()  # an entry point: before torch or faiss load (exdd/runtime.py)

import argparse
import json
import resource
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from exdd.detector.backbones import load_backbone
from exdd.config import Params, load_params
from exdd.data.readers import load_samples, read_image
from exdd.detector.features import PatchEmbedder, random_projection
from exdd.detector.geometry import resolve_input_size
from exdd.detector.sampler import GreedyCoresetSampler, coverage_radius


def patch_like(n: int, dim: int, clusters: int, decay: float, seed: int) -> np.ndarray:
    """(n, dim) float32 mixture of rotated Gaussians with power-law spectra."""
    rng = np.random.default_rng(seed)
    sizes = rng.multinomial(n, rng.dirichlet(np.ones(clusters)))
    scales = (np.arange(1, dim + 1, dtype=np.float64) ** -decay).astype(np.float32)
    out = np.empty((n, dim), np.float32)
    start = 0
    for size in sizes:
        rotation, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
        centre = rng.standard_normal(dim).astype(np.float32) * 2.0
        z = rng.standard_normal((size, dim), dtype=np.float32) * scales
        out[start:start + size] = z @ rotation.astype(np.float32) + centre
        start += size
    return out[rng.permutation(n)]


def real_patches(data: Path, params: Params) -> np.ndarray:
    """Patch features of the normal training images, as the detector extracts them."""
    model = params.model
    features, bs = model.features, model.runtime.batch_size
    normals = [s.image for s in load_samples(data, "train") if s.label == 0]
    backbone = load_backbone(features.backbone, features.backbone_weights)
    size = resolve_input_size(params.data, normals, backbone.stride, backbone.min_size,
                              backbone.name).input_size
    projection = random_projection(sum(backbone.channels), features.projection_dim, model.seed)
    embed = PatchEmbedder(backbone, features.aggregation_kernel, projection, torch.device("cpu"),
                          model.with_padding(validated=True).features.aggregation_padding)
    chunks = []
    for start in tqdm(range(0, len(normals), bs), desc="patches", unit="batch"):
        batch = np.stack([read_image(p, *size) for p in normals[start:start + bs]])
        feats = embed(torch.from_numpy(batch).permute(0, 3, 1, 2)).numpy()
        chunks.append(feats.reshape(-1, feats.shape[-1]))
    return np.concatenate(chunks)


def exact_greedy(points: np.ndarray, first: int, k: int, chunk: int) -> np.ndarray:
    """Plain farthest-point traversal, in place and chunked (no pruning)."""
    n = points.shape[0]
    nearest = np.full(n, np.inf, np.float32)
    buf = np.empty((chunk, points.shape[1]), np.float32)
    dist = np.empty(chunk, np.float32)
    chosen = np.empty(k, np.int64)
    chosen[0] = first
    for t in tqdm(range(k), desc="exact greedy", unit="pt"):
        centre = points[chosen[t]].copy()
        for start in range(0, n, chunk):
            stop = min(start + chunk, n)
            rows, out = buf[: stop - start], dist[: stop - start]
            np.subtract(points[start:stop], centre, out=rows)
            np.einsum("ij,ij->i", rows, rows, out=out)
            np.minimum(nearest[start:stop], out, out=nearest[start:stop])
        if t + 1 < k:
            chosen[t + 1] = int(np.argmax(nearest))
    return chosen


def timed_select(sampler: GreedyCoresetSampler,
                 feats: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Selection, wall seconds, CPU seconds (the machine is shared: both matter)."""
    wall, cpu = time.perf_counter(), time.process_time()
    chosen = sampler.select(feats)
    return chosen, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, help="data set (split CSV or KSDD2 folder): real patches")
    ap.add_argument("--cache", type=Path, help=".npy file keeping the real patches between runs")
    ap.add_argument("--params", help="params file (default: library defaults)")
    ap.add_argument("--n", type=int, default=680_000, help="patches (synthetic) / at most (real)")
    ap.add_argument("--dim", type=int, default=128, help="synthetic patch dimension")
    ap.add_argument("--fraction", type=float, default=0.01)
    ap.add_argument("--clusters", type=int, default=64, help="synthetic clusters")
    ap.add_argument("--decay", type=float, default=0.5, help="synthetic spectrum: std_i ~ i^-decay")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--exact", action="store_true", help="also run exact greedy (slow)")
    ap.add_argument("--exact-n", type=int, help="patches for the exact comparison (default: all)")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args()

    params = load_params(args.params) if args.params else Params()
    if args.data and args.cache and args.cache.exists():
        feats = np.load(args.cache)
    elif args.data:
        feats = real_patches(args.data, params)
        if args.cache:
            np.save(args.cache, feats)
    else:
        feats = patch_like(args.n, args.dim, args.clusters, args.decay, args.seed)
    feats = np.ascontiguousarray(feats[: args.n])
    sampler = GreedyCoresetSampler(args.fraction, params.model.seed, params.model.coreset)
    chosen, wall, cpu = timed_select(sampler, feats)
    figures: dict[str, object] = {
        "patches": "real" if args.data
        else f"synthetic(clusters={args.clusters}, decay={args.decay})",
        "n": int(feats.shape[0]), "dim": int(feats.shape[1]), "fraction": args.fraction,
        "selected": int(chosen.size), "seconds": round(wall, 2), "cpu_seconds": round(cpu, 2),
        "radius": coverage_radius(feats, chosen),
        "features_mb": round(feats.nbytes / 2**20, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    if args.exact:
        sub = np.ascontiguousarray(feats[: args.exact_n]) if args.exact_n else feats
        fast, fast_wall, fast_cpu = timed_select(sampler, sub)
        wall, cpu = time.perf_counter(), time.process_time()
        reference = exact_greedy(sampler.project(sub), int(fast[0]), fast.size,
                                 params.model.coreset.chunk_size)
        exact_radius = coverage_radius(sub, reference)
        fast_radius = coverage_radius(sub, fast)
        figures["exact"] = {
            "n": int(sub.shape[0]), "selected": int(fast.size),
            "seconds": round(fast_wall, 2), "cpu_seconds": round(fast_cpu, 2),
            "exact_seconds": round(time.perf_counter() - wall, 2),
            "exact_cpu_seconds": round(time.process_time() - cpu, 2),
            "radius": fast_radius, "exact_radius": exact_radius,
            "radius_ratio": fast_radius / exact_radius,
            "same_members": float(np.isin(fast, reference).mean()),
        }
    print(json.dumps(figures, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
