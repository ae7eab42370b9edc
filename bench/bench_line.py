"""A real line over several nights: a labelled data set through ``exdd line add`` and the
nightly pipeline, with per-night intake counts, step times, metrics and gate decision.

    python bench/bench_line.py --data ../shared/data/magnetic-tile/split.csv --out /tmp/bl

The data set's train split is delivered as ``--nights`` batches (``exdd line add
--batches``, then ``exdd line feed`` before each later night); each night is
``exdd.pipeline.nightly.run_nightly``, the steps the DAG runs, in one process, timed step by step.
The platform params are exdd's defaults (``--params`` to start from another file).
"""

from __future__ import annotations

from exdd import runtime

runtime.configure()  # an entry point: before torch or faiss load (exdd/runtime.py)

import argparse
import functools
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from exdd.evaluation.report import HEADLINE_METRICS
from exdd.pipeline import nightly as pipeline
from exdd.pipeline.onboarding import add_line, feed_line
from exdd.line.workspace import default_params_text, line_params_text

STEPS = ("validate", "synthesize", "build_banks", "evaluate", "gate", "publish", "score",
         "report")
KEYS = HEADLINE_METRICS


def timed(times: dict[str, float], name: str, step: Callable[..., Any]) -> Callable[..., Any]:
    """``step`` that adds its wall time to ``times[name]``, skipped or not."""
    @functools.wraps(step)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return step(*args, **kwargs)
        finally:
            times[name] = times.get(name, 0.0) + time.perf_counter() - start
    return wrapper


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="KSDD2 folder or manifest CSV")
    ap.add_argument("--out", required=True, type=Path, help="new folder for params + line")
    ap.add_argument("--name", default="bench", help="line name")
    ap.add_argument("--nights", type=int, default=3, help="train split in this many batches")
    ap.add_argument("--params", type=Path, help="platform params to start from")
    ap.add_argument("--json", type=Path, help="write all figures here")
    args = ap.parse_args()

    args.out.mkdir(parents=True)
    params_file = args.out / "params.yaml"
    text = args.params.read_text() if args.params else default_params_text()
    params_file.write_text(line_params_text(text))
    start = time.perf_counter()
    setup = add_line(args.name, args.data, params_file, batches=args.nights)
    figures: dict[str, Any] = {"line_add_s": time.perf_counter() - start,
                               "n_benchmark": setup.n_benchmark, "batches": setup.batches,
                               "nights": []}
    print(f"line add: {figures['line_add_s']:.1f} s, benchmark {setup.n_benchmark} images, "
          f"batches {setup.batches}")
    for night in range(1, args.nights + 1):
        if night > 1:
            feed_line(params_file, args.name)
        times: dict[str, float] = {}
        originals = {name: getattr(pipeline, name) for name in STEPS}
        for name, step in originals.items():
            setattr(pipeline, name, timed(times, name, step))
        try:
            run = pipeline.open_run(params_file, args.name, f"night-{night}")
            start = time.perf_counter()
            outcome = pipeline.run_nightly(run).to_json()
            wall = time.perf_counter() - start
        finally:
            for name, step in originals.items():
                setattr(pipeline, name, step)
        record = {"night": night, "wall_s": wall, "steps_s": times,
                  **{k: outcome[k] for k in ("status", "n_total", "n_accepted",
                                             "n_quarantined", "n_held", "drift",
                                             "champion_version")},
                  "metrics": {k: outcome["metrics"].get(k) for k in KEYS},
                  "gate": outcome["gate"]}
        figures["nights"].append(record)
        build = times.get("synthesize", 0.0) + times.get("build_banks", 0.0)
        metrics = "  ".join(f"{k} {v:.4f}" for k, v in record["metrics"].items() if v is not None)
        print(f"night {night}: intake {outcome['n_total']} files, {outcome['n_accepted']} "
              f"accepted, {outcome['n_quarantined']} quarantined; build {build:.1f} s, "
              f"evaluate {times.get('evaluate', 0.0):.1f} s, wall {wall:.1f} s; {metrics}; "
              f"gate {outcome['gate']['passed']} ({outcome['status']})")
        for reason in outcome["gate"]["reasons"]:
            print(f"    {reason}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
