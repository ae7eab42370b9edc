"""Detector benchmark: accuracy of each scoring rule, fit-time split, throughput, peak RSS.

    python bench/bench_detector.py --data ../shared/data/magnetic-tile/split.csv

The banks are built once; single-bank PatchCore and each dual rule score the same test
features, so the comparison isolates the scoring rule. ``--repeat N`` fits on the train
split N times over to show that peak memory does not grow with the number of images.
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

from exdd.config import DataConfig, ModelConfig, load_params
from exdd.data.readers import load_samples, read_image
from exdd.evaluation.evaluate import evaluate
from exdd.evaluation.report import REPORTED_METRICS
from exdd.detector.geometry import with_input_size
from exdd.detector.model import ExDD

KEYS = REPORTED_METRICS
ONE_RULE = {r: {"rule": r, "image_rule": "same"} for r in ("reference", "calibrated")}


def rule_name(model: ExDD) -> str:
    """The fitted model's rules: the map's, and the image score's where it differs."""
    rule = model.model.scoring
    return rule.rule if rule.image_rule == "same" else f"{rule.rule}+image_{rule.image_rule}"


def preload(model: ExDD, paths: list[Path]) -> torch.Tensor:
    """The images decoded and resized once, laid out as predict feeds them to the backbone."""
    h, w = model.input_size
    return torch.from_numpy(np.stack([read_image(p, h, w) for p in paths])).permute(0, 3, 1, 2)


def backbone_throughput(model: ExDD, images: torch.Tensor) -> float:
    """Images/s of the bare backbone forward on preloaded batches of the same images."""
    bs, backbone = model.model.runtime.batch_size, model.embedder.backbone
    start = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(images), bs):
            backbone(images[i:i + bs].to(model.embedder.device))
    return len(images) / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--params", help="params file (default: library defaults)")
    ap.add_argument("--input-size", metavar="HxW|PRESET",
                    help="input size (default: the config's, which follows the data)")
    ap.add_argument("--backbone", default="efficientnet_lite0")
    ap.add_argument("--repeat", type=int, default=1, help="fit on the train split N times over")
    ap.add_argument("--json", help="write all figures here")
    args = ap.parse_args()

    params = load_params(args.params) if args.params else None
    model_cfg = (params.model if params else ModelConfig()).updated(
        features={"backbone": args.backbone})
    data_cfg = params.data if params else DataConfig()
    if args.input_size:
        data_cfg = with_input_size(data_cfg, args.input_size)
    train = load_samples(args.data, "train") * args.repeat
    test = load_samples(args.data, "test")
    start = time.perf_counter()
    model = ExDD(model_cfg, data_cfg).fit(train)
    fit_s = time.perf_counter() - start
    h, w = model.input_size
    print(f"train {len(train)} images ({sum(s.label for s in train)} defect), test {len(test)}; "
          f"{args.backbone} at {h}x{w}, torch threads {torch.get_num_threads()}")
    figures: dict[str, object] = {
        "input_size": [h, w], "fit_seconds": fit_s, "fit_split": model.fit_timings_,
        "bank_sizes": {"normal": len(model.bank_normal_), "defect": len(model.bank_defect_)},
        "tau": {"normal": model.tau_normal_, "defect": model.tau_defect_},
        "peak_rss_fit_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    print(f"fit {fit_s:.1f}s: " + ", ".join(f"{k} {v:.1f}s" for k, v in model.fit_timings_.items())
          + f"; M_N {len(model.bank_normal_)}, M_P {len(model.bank_defect_)}; "
          f"peak RSS so far {figures['peak_rss_fit_mb']:.0f} MB")

    paths = [s.image for s in test]
    images = preload(model, paths)
    backbone_throughput(model, images)  # warm-up: first-use allocations, kernel selection
    results = {}
    throughput: dict[str, dict[str, float]] = {}
    for name, changes in (("patchcore_single_bank", {"scoring": {"single_bank": True}}),
                          ("dual_reference", {"scoring": ONE_RULE["reference"]}),
                          ("dual_calibrated", {"scoring": ONE_RULE["calibrated"]}),
                          (f"dual_default_{rule_name(model)}", {}),
                          ("dual_default_hnsw", {"search": {"index": "hnsw"}})):
        m = model.with_predict_settings(**changes)
        m.predict(paths[: model_cfg.runtime.batch_size])  # builds the search indexes
        start = time.perf_counter()
        pred = m.predict(paths)
        rate = len(paths) / (time.perf_counter() - start)
        # the bare backbone right after, so that both see the same machine load
        bare = backbone_throughput(model, images)
        throughput[name] = {"predict": rate, "backbone": bare, "share": rate / bare}
        metrics = evaluate(m, test, pred)
        results[name] = {k: metrics[k] for k in KEYS}
        print(f"{name:24s} " + "  ".join(f"{k} {metrics[k]:.4f}" for k in KEYS)
              + f"  | predict {rate:.1f} img/s, bare backbone {bare:.1f} img/s "
              f"({100 * rate / bare:.0f}%)")
    figures["throughput"] = throughput
    figures["results"] = results
    figures["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {figures['peak_rss_mb']:.0f} MB")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2, default=float))


if __name__ == "__main__":
    main()
