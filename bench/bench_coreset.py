"""Coreset benchmark: time and coverage radius of the pruned greedy sampler vs exact greedy.

    python bench/bench_coreset.py                      # 680k x 128, 1%, sampler only
    python bench/bench_coreset.py --n 100000 --exact   # also plain farthest-point traversal

The synthetic set imitates patch features: a mixture of Gaussian clusters of uneven size,
each with its own orientation and a power-law spectrum (standard deviation along the i-th
axis ~ i^-decay), as CNN patch features have a few dominant directions per texture. Exact
greedy is the plain traversal (one in-place pass over all points per selected point) on
the same projected features from the same start point, so the two differ only by pruning.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from tqdm import tqdm

from exdd.config import ModelConfig
from exdd.sampler import GreedyCoresetSampler, coverage_radius


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
            np.subtract(points[start:stop], centre, out=buf[: stop - start])
            np.einsum("ij,ij->i", buf[: stop - start], buf[: stop - start], out=dist[: stop - start])
            np.minimum(nearest[start:stop], dist[: stop - start], out=nearest[start:stop])
        if t + 1 < k:
            chosen[t + 1] = int(np.argmax(nearest))
    return chosen


def main() -> None:
    defaults = ModelConfig()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=680_000, help="number of patches")
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--fraction", type=float, default=0.01)
    ap.add_argument("--clusters", type=int, default=64)
    ap.add_argument("--decay", type=float, default=0.5, help="spectrum: std of axis i ~ i^-decay")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--exact", action="store_true", help="also run exact greedy (slow)")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args()

    feats = patch_like(args.n, args.dim, args.clusters, args.decay, args.seed)
    sampler = GreedyCoresetSampler(args.fraction, defaults.coreset_projection_dim, args.seed)
    start = time.perf_counter()
    chosen = sampler.select(feats)
    seconds = time.perf_counter() - start
    radius = coverage_radius(feats, chosen)
    figures: dict[str, object] = {
        "n": args.n, "dim": args.dim, "fraction": args.fraction, "selected": int(chosen.size),
        "clusters": args.clusters, "decay": args.decay,
        "seconds": round(seconds, 2), "radius": radius,
    }
    if args.exact:
        start = time.perf_counter()
        reference = exact_greedy(sampler.project(feats), int(chosen[0]), chosen.size,
                                 defaults.coreset_chunk_size)
        figures["exact_seconds"] = round(time.perf_counter() - start, 2)
        figures["exact_radius"] = coverage_radius(feats, reference)
        figures["radius_ratio"] = radius / figures["exact_radius"]
        figures["same_selection"] = float(np.isin(chosen, reference).mean())
    print(json.dumps(figures, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)


if __name__ == "__main__":
    main()
