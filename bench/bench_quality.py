"""Detection quality on every data set we have: single-bank vs anomalib vs paper vs default.

    python bench/bench_quality.py [--data magnetic-tile mvtec3d-tire:def10 ...]
                                  [--peer-python .bench-venv/bin/python] [--json q.json]

Per data set (the shared sets and their stress variants, bench/variants.py) one fit with
the product's defaults (params.yaml: the input size follows the data), its test split
scored by the default and by the paper's ``reference`` rule on the same banks, and one fit
as ``exdd fit --single-bank`` makes it (PatchCore: M_N alone, its own feature padding and
pooling); ``--synthetic-only`` adds a fit whose M_P holds procedural synthetic defects only
(a new line with no real defect yet), compared with that single bank. With
``--peer-python`` (the benchmark venv of ``make bench-venv``), anomalib's PatchCore runs on
the same backbone features and input size (bench/peer_anomalib.py). Nothing here chooses a default: that is
bench/select_defaults.py's job, on training data only.
"""

from __future__ import annotations

from exdd import runtime

runtime.configure()  # an entry point: before torch or faiss load (exdd/runtime.py)

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from exdd.config import load_params
from exdd.data.readers import load_samples
from exdd.evaluation.evaluate import evaluate
from exdd.detector.model import ExDD
from exdd.data.synth import synthesize

sys.path.insert(0, str(Path(__file__).resolve().parent))
import variants  # noqa: E402
from bench_detector import ONE_RULE, rule_name  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
KEYS = ("image_auroc", "pixel_auroc", "aupro", "image_ap")
PEER_SCRIPT = Path(__file__).resolve().parent / "peer_anomalib.py"
# anomalib's k-center greedy allocates a (patches x 301) temporary per selected patch; with
# glibc's adaptive mmap threshold those blocks stay in the heap and the peer grew past 20 GB
# on 204k patches (OOM-killed). A fixed 1 MiB threshold returns each block on free (1.6 GB).
PEER_ENV = {"MALLOC_MMAP_THRESHOLD_": str(1 << 20)}


def peer(python: str, manifest: Path, size: tuple[int, int], coreset: float) -> dict[str, float]:
    """anomalib's PatchCore on the same backbone and input size, in the benchmark venv."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "peer.json"
        subprocess.run([python, str(PEER_SCRIPT), "--data", str(manifest), "--height",
                        str(size[0]), "--width", str(size[1]), "--coreset", str(coreset),
                        "--json", str(out)], check=True, cwd=ROOT,
                       env={**os.environ, **PEER_ENV})
        return json.loads(out.read_text())["runs"][str(coreset)]


def row(name: str, metrics: dict[str, float], seconds: float | None = None) -> dict[str, object]:
    r: dict[str, object] = {"rule": name, **{k: float(metrics[k]) for k in KEYS}}
    if seconds is not None:
        r["seconds"] = seconds
    print(f"  {name:<34} " + "  ".join(f"{k} {metrics[k]:.4f}" for k in KEYS), flush=True)
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", nargs="+", default=list(variants.ALL),
                    help="data sets: NAME or NAME:VARIANT (bench/variants.py)")
    ap.add_argument("--params", default=str(ROOT / "params.yaml"))
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "exdd-variants")
    ap.add_argument("--peer-python", help="python of the benchmark venv (anomalib)")
    ap.add_argument("--peer-coreset", type=float, default=0.1, help="anomalib's default")
    ap.add_argument("--synthetic-only", action="store_true",
                    help="also fit with procedural synthetic defects as the only M_P")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    params = load_params(args.params)
    table: dict[str, list[dict[str, object]]] = {}
    for name in args.data:
        manifest = variants.build(name, args.cache)
        train, test = load_samples(manifest, "train"), load_samples(manifest, "test")
        start = time.perf_counter()
        model = ExDD(params.model, params.data).fit(train)
        fit_s = time.perf_counter() - start
        h, w = model.data.input_size
        print(f"{name}: train {len(train)} ({sum(s.label for s in train)} defect), test "
              f"{len(test)}; input {h}x{w}; M_N {len(model.bank_normal_)}, "
              f"M_P {len(model.bank_defect_)}; fit {fit_s:.0f}s", flush=True)
        single = ExDD(params.model.updated(scoring={"single_bank": True}), params.data).fit(train)
        rows = [row("single-bank PatchCore", evaluate(single, test))]
        if args.peer_python:
            rows.append(row(f"anomalib PatchCore ({args.peer_coreset:g} coreset)",
                            peer(args.peer_python, manifest, (h, w), args.peer_coreset)))
        rows.append(row("dual, reference (paper)",
                        evaluate(model.with_predict_settings(scoring=ONE_RULE["reference"]),
                                 test)))
        rows.append(row(f"dual, default ({rule_name(model)})", evaluate(model, test)))
        if args.synthetic_only:
            with tempfile.TemporaryDirectory() as tmp:
                synthetic = load_samples(synthesize(
                    manifest, Path(tmp) / "synthetic", params.synth, params.data,
                    backend="procedural", count=params.synth.count, seed=params.synth.seed))
                normals = [s for s in train if s.label == 0]
                synth_model = ExDD(params.model, params.data).fit(normals, synthetic)
                rows.append(row(f"default, synthetic-only M_P ({rule_name(synth_model)})",
                                evaluate(synth_model, test)))
        table[name] = rows

    print(f"\n| data set | rule | {' | '.join(KEYS)} |")
    print("|---|---|" + "---:|" * len(KEYS))
    for name, rows in table.items():
        for r in rows:
            print(f"| {name} | {r['rule']} | " + " | ".join(f"{r[k]:.4f}" for k in KEYS) + " |")
    if args.json:
        args.json.write_text(json.dumps(table, indent=2))


if __name__ == "__main__":
    main()
