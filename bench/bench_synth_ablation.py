"""Ablation: does the procedural synthetic-defect set help the positive bank M_P?

    python bench/bench_synth_ablation.py [--data ../shared/data/magnetic-tile/split.csv]

Rows: the train split (normal images -> M_N, real defects -> M_P) plus the first N of one
procedural synthetic set (N = 0, 25, 50, 100, 200), then the few-defect line's situation:
normal training images only, with synthetic defects as the sole source of M_P. The synthetic
set is generated once (largest N) from the train split's defect-free images, so each row's
samples contain the previous row's. All rows are scored on the same test split. With real
defects to validate on, fit itself decides whether M_P keeps the synthetic ones
(``selection.synthetic``); the table says what it chose (``--params`` with ``synthetic:
keep`` gives the rows as they were before that choice).

Every row re-fits the detector, but an image's backbone features do not depend on the banks
and M_N (the slow coreset) is the same in every row, so ``CachedExDD`` computes features once
per image and builds a bank once per distinct patch set; results are those of ``ExDD``.
"""

from __future__ import annotations

from exdd import runtime

runtime.configure()  # an entry point: before torch or faiss load (exdd/runtime.py)

import argparse
import hashlib
import json
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from exdd.detector.banks import BankBuilder
from exdd.config import DataConfig, ModelConfig, SynthConfig, load_params
from exdd.data.readers import Sample, load_samples
from exdd.evaluation.evaluate import evaluate
from exdd.detector.model import ExDD
from exdd.data.synth import synthesize

DEFAULT_DATA = Path(__file__).resolve().parents[1] / "../shared/data/magnetic-tile/split.csv"
KEYS = ("image_auroc", "pixel_auroc", "aupro", "image_ap")


class ReplayBuilder:
    """Stands in for a BankBuilder: a bank from exactly the same patches (and owners) is
    built only once."""

    built: dict[str, tuple[BankBuilder, tuple[np.ndarray, float]]] = {}

    def __init__(self, builder: BankBuilder) -> None:
        self.builder = builder
        self.timings = builder.timings
        self.seen = 0
        self._parts: list[tuple[np.ndarray, np.ndarray | None]] = []
        self._digest = hashlib.sha256(repr(builder).encode())

    def add(self, feats: np.ndarray, owners: np.ndarray | None = None) -> None:
        feats = np.ascontiguousarray(feats.reshape(-1, self.builder.dim))
        self._digest.update(feats.tobytes())
        if owners is not None:
            self._digest.update(owners.tobytes())
        self._parts.append((feats, owners))
        self.seen += len(feats)

    def _built(self) -> tuple[BankBuilder, tuple[np.ndarray, float]]:
        """The builder of these patches and its (bank, tau), made once across instances."""
        key = self._digest.hexdigest()
        if key not in self.built:
            for feats, owners in self._parts:
                self.builder.add(feats, owners)
            self.built[key] = self.builder, self.builder.finish()
        return self.built[key]

    def finish(self) -> tuple[np.ndarray, float]:
        return self._built()[1]

    @property
    def owners(self) -> np.ndarray:
        return self._built()[0].owners


class CachedExDD(ExDD):
    """ExDD with per-image patch features and finished banks memoised across instances."""

    features: dict[tuple[str, Path], np.ndarray] = {}  # (feature padding, image)

    def bank_builder(self, fraction: float,  # type: ignore[override]
                     min_keep: int = 1) -> ReplayBuilder:
        return ReplayBuilder(super().bank_builder(fraction, min_keep))

    def patch_features(self, paths: Sequence[Path], desc: str = "features"
                       ) -> Iterator[np.ndarray]:
        padding = self.model.features.aggregation_padding  # made concrete before features
        missing = [p for p in dict.fromkeys(paths) if (padding, p) not in self.features]
        fresh = (f for batch in super().patch_features(missing, desc) for f in batch)
        self.features.update(((padding, p), f) for p, f in zip(missing, fresh))
        bs = self.model.runtime.batch_size
        for i in range(0, len(paths), bs):
            yield np.stack([self.features[padding, p] for p in paths[i:i + bs]])


def run(name: str, train: list[Sample], synthetic: list[Sample], test: list[Sample],
        model_cfg: ModelConfig, data_cfg: DataConfig) -> dict[str, object]:
    start = time.perf_counter()
    model = CachedExDD(model_cfg, data_cfg).fit(train, synthetic)
    metrics = evaluate(model, test)
    chosen = (model.state.selection or {}).get("synthetic")
    in_m_p = ("-" if not synthetic else "kept" if chosen is None or chosen["kept"]
              else "left out")  # fit's held-out choice (selection.synthetic)
    row = {"name": name, "real_defects": sum(s.label for s in train), "synthetic": len(synthetic),
           "in_m_p": in_m_p, "rule": model.model.scoring.rule,
           "seconds": time.perf_counter() - start, **{k: metrics[k] for k in KEYS}}
    print(f"{name:<22} " + "  ".join(f"{k} {row[k]:.4f}" for k in KEYS)
          + f"  synthetic {in_m_p}, rule {row['rule']} ({row['seconds']:.0f}s)", flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--params", help="params file (default: library defaults)")
    ap.add_argument("--backbone", default="efficientnet_lite0")
    ap.add_argument("--counts", type=int, nargs="+", default=[0, 25, 50, 100, 200])
    ap.add_argument("--synthetic-only", type=int, nargs="*", default=[100],
                    help="synthetic counts fitted without any real defect")
    ap.add_argument("--seed", type=int, default=0, help="synthetic set seed")
    ap.add_argument("--json", type=Path, help="write the table here too")
    args = ap.parse_args()

    params = load_params(args.params) if args.params else None
    model_cfg = (params.model if params else ModelConfig()).updated(
        features={"backbone": args.backbone})
    data_cfg = params.data if params else DataConfig()
    synth_cfg = params.synth if params else SynthConfig()
    train = load_samples(args.data, "train")
    test = load_samples(args.data, "test")
    normals = [s for s in train if s.label == 0]
    largest = max(args.counts + args.synthetic_only)
    print(f"train {len(train)} ({len(train) - len(normals)} defect), test {len(test)}; "
          f"{args.backbone}; "
          f"{largest} procedural samples, seed {args.seed}", flush=True)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        synthetic = load_samples(synthesize(args.data, Path(tmp) / "synthetic", synth_cfg, data_cfg,
                                            backend="procedural", count=largest, seed=args.seed))
        for n in args.counts:
            rows.append(run(f"real + {n} synthetic", train, synthetic[:n], test, model_cfg,
                            data_cfg))
        for n in args.synthetic_only:
            rows.append(run(f"{n} synthetic only", normals, synthetic[:n], test, model_cfg,
                            data_cfg))

    print(f"\n| M_P | real defects | synthetic | synthetic in M_P | map rule | {' | '.join(KEYS)} |")
    print("|---|---:|---:|---|---|" + "---:|" * len(KEYS))
    for r in rows:
        print(f"| {r['name']} | {r['real_defects']} | {r['synthetic']} | {r['in_m_p']} | "
              f"{r['rule']} | " + " | ".join(f"{r[k]:.4f}" for k in KEYS) + " |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2, default=float))


if __name__ == "__main__":
    main()
