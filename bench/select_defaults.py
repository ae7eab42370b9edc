"""Choose the detector's defaults on training data only: cross-validation inside each train
split, then the rule that is best across every data set, not on one.

    python bench/select_defaults.py [--data magnetic-tile mvtec3d-tire ...] [--json sel.json]

Each data set's cross-validation table is kept under ``--cache``/select, so several runs on
different data sets can share the work and a last run over all of them only selects.

For each data set (bench/variants.py: the shared sets and their stress variants) the train
split is cut into ``--folds`` stratified folds. Per fold, M_N is built from the other folds'
normal images, M_P from the other folds' defect patches, and the held-out fold (its normal
and defective images, with their masks) is scored by every candidate: single-bank, the
weighted and boosted dual rules with max or top-k image pooling, and the defect-bank
settings (coreset fraction with its floor, or all patches; dilated masks or not), each on
features pooled with either border padding (``features.aggregation_padding``: zeros or
inside). Test splits are never read.

Selection is minimax regret: a candidate's regret on a data set is how far it trails the
best candidate there, at image or at pixel level, whichever is worse; the default is the
eligible candidate whose largest regret over all data sets is smallest (keeping every defect
patch is measured but not eligible: on a many-defect line it doubles the search); the
single bank's own default is the single-bank candidate picked the same way among the
single-bank candidates. Leave-one-data-set-out
shows whether that protocol carries over: the pick made without data set D, scored on D.
One more candidate is the per-line choice the product makes with ``scoring.rule: auto``
(``AUTO`` below), read off each data set's own table.
"""

from __future__ import annotations

from exdd import runtime

runtime.configure()  # an entry point: before torch or faiss load (exdd/runtime.py)

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from itertools import product
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from exdd.detector.banks import defect_cells
from exdd.detector.index import NearestNeighbourIndex
from exdd.config import Params, load_params
from exdd.data.readers import Sample, load_samples, read_mask
from exdd.detector.geometry import resolve_input_size
from exdd.evaluation.metrics import pixel_metrics
from exdd.detector.model import ExDD
from exdd.detector.scoring import MapUpsampler, dual_evidence, pooled

sys.path.insert(0, str(Path(__file__).resolve().parent))
import variants  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SEED = 0
RULES = [("single", 0.0), ("weighted", 1.0), ("boosted", 1.0), ("boosted", 2.0)]
POOLINGS = ("max", "top_k")
DEFECT_BANKS = {"coreset+floor": None, "all": 10 ** 9}  # None: the config's floor
# Measured, never a default: every defect patch doubles the bank search on a line with many
# defects (magnetic-tile: 15k defect patches beside a 13.6k M_N), past the throughput budget.
NOT_ELIGIBLE = "bank=all"
DILATIONS = (0, 8)  # pixels at the input size: none, or about one stride-8 cell
PADDINGS = ("zeros", "inside")  # features.aggregation_padding: each candidate under both
# ``scoring.rule: auto`` (exdd.detector.selection): per data set and bank setting, the map of
# the candidate with the better pixel AUROC and the image score of the one with the better
# image AUROC. Read off this table it is optimistic (chosen on the folds it is scored on);
# the product chooses on held-out train images, and bench/bench_quality.py scores that
# choice on the test split.
AUTO = ("weighted(1)", "boosted(2)")


@dataclass
class Split:
    """One data set's train split as features: everything a fold needs, read once."""

    paths: list[Path]
    feats: np.ndarray   # (n, h, w, D) patch features
    labels: np.ndarray  # (n,)
    masks: np.ndarray   # (n, H, W) bool, at the input size
    size: tuple[int, int]


# Per padding and image: shared by the variants that reuse it.
FEATURES: dict[tuple[str, Path], np.ndarray] = {}
# M_N per padding and set of normals.
NORMAL_BANKS: dict[tuple[str, tuple[Path, ...]], NearestNeighbourIndex] = {}


def read_split(model: ExDD, samples: list[Sample], threshold: int) -> Split:
    padding = model.model.features.aggregation_padding
    missing = [s.image for s in samples if (padding, s.image) not in FEATURES]
    fresh = (f for batch in model.patch_features(missing) for f in batch)
    FEATURES.update(((padding, p), f) for p, f in zip(missing, fresh))
    h, w = model.data.input_size
    return Split([s.image for s in samples],
                 np.stack([FEATURES[padding, s.image] for s in samples]),
                 np.array([s.label for s in samples]),
                 np.stack([read_mask(s.mask, h, w, threshold) for s in samples]), (h, w))


def folds_of(labels: np.ndarray, k: int) -> np.ndarray:
    """Stratified, seeded fold number per image."""
    rng, folds = np.random.default_rng(SEED), np.empty(len(labels), int)
    for c in (0, 1):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        folds[idx] = np.arange(len(idx)) % k
    return folds


def score_fold(split: Split, fit: np.ndarray, val: np.ndarray, model: ExDD
               ) -> dict[str, tuple[float, float]]:
    """(image AUROC, pixel AUROC) of every candidate on one held-out fold."""
    cfg = model.model
    n, gh, gw, dim = split.feats.shape
    query = np.ascontiguousarray(split.feats[val].reshape(-1, dim), np.float32)
    normals = fit & (split.labels == 0)
    key = (cfg.features.aggregation_padding,
           tuple(split.paths[i] for i in np.flatnonzero(normals)))
    if key not in NORMAL_BANKS:
        NORMAL_BANKS[key] = model.indexed_bank(split.feats[normals].reshape(-1, dim),
                                               cfg.coreset.normal)[0]
    d_n = NORMAL_BANKS[key].search(query, 1)[0][:, 0]
    up = MapUpsampler((gh, gw), split.size, cfg.scoring.smoothing_sigma)
    labels, masks = split.labels[val], split.masks[val]
    out: dict[str, tuple[float, float]] = {}

    def record(name: str, evidence: np.ndarray, poolings: tuple[str, ...]) -> None:
        maps = np.concatenate([up(e) for e in np.array_split(
            evidence.reshape(-1, gh, gw), max(1, len(labels) // 32))])
        pixel = pixel_metrics(maps, masks)["pixel_auroc"]
        for pooling in poolings:
            scores = pooled(maps, cfg.scoring.model_copy(update={"image_score": pooling}))
            out[f"{name} {pooling}"] = (float(roc_auc_score(labels, scores)), pixel)

    record("single", d_n, POOLINGS)
    fit_defects = fit & (split.labels == 1)
    for dilation, (sizing, min_keep) in product(DILATIONS, DEFECT_BANKS.items()):
        cells = defect_cells(split.masks[fit_defects], (gh, gw), dilation)
        patches = split.feats[fit_defects][cells]
        index, tau = model.indexed_bank(
            patches, cfg.coreset.defect, cfg.coreset.defect_min if min_keep is None else min_keep)
        d_p = index.search(query, 1)[0][:, 0]
        for scoring, weight in RULES[1:]:
            rule = cfg.scoring.model_copy(update={"rule": scoring, "defect_weight": weight,
                                                  "boost_weight": weight})
            name = f"{scoring}{'' if scoring == 'calibrated' else f'({weight:g})'}"
            record(f"{name} bank={sizing} dil={dilation}", dual_evidence(d_n, d_p, tau, rule),
                   POOLINGS)
    return out


def minimax(table: dict[str, dict[str, tuple[float, float]]], names: list[str],
            eligible: bool = True) -> tuple[str, dict[str, float]]:
    """The candidate whose worst regret over ``names`` is smallest, and its regrets; with
    ``eligible``, only candidates that may become the default."""
    best = {d: (max(v[0] for v in table[d].values()), max(v[1] for v in table[d].values()))
            for d in table}
    regret = {c: {d: max(best[d][0] - table[d][c][0], best[d][1] - table[d][c][1])
                  for d in table} for c in table[names[0]]
              if not (eligible and NOT_ELIGIBLE in c)}
    pick = min(regret, key=lambda c: (max(regret[c][d] for d in names), c))
    return pick, regret[pick]


def cv_table(name: str, padding: str, params: Params, args: argparse.Namespace
             ) -> dict[str, tuple[float, float]]:
    """Every candidate's mean (image, pixel AUROC) over the folds of one data set's train
    split, with the features pooled under ``padding``; computed once, kept under --cache."""
    saved = args.cache / "select" / f"{name.replace(':', '_')}_{padding}.json"
    if saved.exists():  # runs can share them
        return {c: tuple(v) for c, v in json.loads(saved.read_text()).items()}
    start = time.perf_counter()
    train = load_samples(variants.build(name, args.cache), "train")
    model = ExDD(params.model.updated(features={"aggregation_padding": padding}), params.data)
    backbone = model.embedder.backbone
    model.data = resolve_input_size(params.data, [s.image for s in train], backbone.stride,
                                    backbone.min_size, backbone.name)
    split = read_split(model, train, params.data.mask_threshold)
    folds = folds_of(split.labels, args.folds)
    per_fold = [score_fold(split, folds != k, folds == k, model) for k in range(args.folds)]
    table = {c: tuple(np.mean([f[c] for f in per_fold], axis=0).tolist()) for c in per_fold[0]}
    saved.parent.mkdir(parents=True, exist_ok=True)
    saved.write_text(json.dumps(table, indent=1))
    top = sorted(table.items(), key=lambda kv: -sum(kv[1]))[:5]
    print(f"{name}, padding {padding}: {len(train)} train images, input "
          f"{split.size[0]}x{split.size[1]}, {time.perf_counter() - start:.0f}s; best: "
          + "; ".join(f"{c} {v[0]:.4f}/{v[1]:.4f}" for c, v in top), flush=True)
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", nargs="+", default=list(variants.ALL))
    ap.add_argument("--params", default=str(ROOT / "params.yaml"))
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "exdd-variants")
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    params = load_params(args.params)
    table: dict[str, dict[str, tuple[float, float]]] = {}
    for name, padding in product(args.data, PADDINGS):
        table.setdefault(name, {}).update(
            (f"pad={padding} {c}", v) for c, v in cv_table(name, padding, params, args).items())
    names = list(table)
    for d, padding, sizing, dilation in product(names, PADDINGS, DEFECT_BANKS, DILATIONS):
        bank = f"bank={sizing} dil={dilation} top_k"
        pair = [table[d][f"pad={padding} {rule} {bank}"] for rule in AUTO]
        table[d][f"pad={padding} auto: {' or '.join(AUTO)} {bank}"] = (
            max(v[0] for v in pair), max(v[1] for v in pair))
    free_pick, free = minimax(table, names, eligible=False)
    print(f"\nminimax-regret pick among all candidates: {free_pick} "
          f"(worst regret {max(free.values()):.4f})")
    pick, regrets = minimax(table, names)
    print(f"minimax-regret pick over {len(names)} data sets, eligible defaults: {pick} "
          f"(worst regret {max(regrets.values()):.4f})")
    singles = {d: {c: v for c, v in table[d].items() if " single " in f" {c} "} for d in names}
    single_pick, single_regrets = minimax(singles, names)
    print(f"single bank, among its own candidates: {single_pick} "
          f"(worst regret {max(single_regrets.values()):.4f})")
    print("| data set | pick: image / pixel AUROC (CV in train) | regret | best image | best pixel |")
    print("|---|---|---:|---:|---:|")
    for d in names:
        v = table[d][pick]
        print(f"| {d} | {v[0]:.4f} / {v[1]:.4f} | {regrets[d]:.4f} | "
              f"{max(x[0] for x in table[d].values()):.4f} | "
              f"{max(x[1] for x in table[d].values()):.4f} |")
    print("\nleave-one-data-set-out (pick made without D, its regret on D):")
    for d in names:
        others = [o for o in names if o != d] or names
        held_pick, held = minimax(table, others)
        print(f"  without {d}: {held_pick}; regret on {d} {held[d]:.4f}")
    if args.json:
        args.json.write_text(json.dumps({"table": table, "pick": pick}, indent=2))


if __name__ == "__main__":
    main()
