"""Generation speed of the procedural synthetic-defect backend (images/s, one CPU process).

Times ``exdd.data.synth.synthesize`` end to end (read source, render, write PNGs and provenance)
on the demo surfaces and, when present, on Magnetic-tile's defect-free training images.

    python bench/bench_synth_speed.py [--count 200] [--magnetic-tile PATH/split.csv]
"""

from __future__ import annotations

from exdd import runtime

runtime.configure()  # an entry point: before torch or faiss load (exdd/runtime.py)

import argparse
import tempfile
import time
from pathlib import Path

from exdd.config import DataConfig, DemoConfig, SynthConfig
from exdd.data.readers import load_samples
from exdd.data.demo import make_demo
from exdd.data.synth import synthesize

DEFAULT_MAGNETIC_TILE = (Path(__file__).resolve().parents[1]
                         / "../shared/data/magnetic-tile/split.csv")


def time_backend(data: Path, out: Path, count: int) -> float:
    """Images per second for ``count`` procedural samples drawn from ``data``."""
    start = time.perf_counter()
    synthesize(data, out, SynthConfig(), DataConfig(), backend="procedural", count=count, seed=0)
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--magnetic-tile", type=Path, default=DEFAULT_MAGNETIC_TILE)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        demo = make_demo(Path(tmp) / "demo", DemoConfig())
        size = f"{DemoConfig().width}x{DemoConfig().height}"
        rows.append(("demo", size, time_backend(demo, Path(tmp) / "syn-demo", args.count)))
        if args.magnetic_tile.is_file():
            normals = [s for s in load_samples(args.magnetic_tile, "train") if s.label == 0]
            rows.append(("magnetic-tile", f"native (~{len(normals)} sources)",
                         time_backend(args.magnetic_tile, Path(tmp) / "syn-mt", args.count)))
    print(f"\nprocedural backend, {args.count} samples each")
    print(f"{'data':<15} {'image size':<26} {'images/s':>9}")
    for name, size, rate in rows:
        print(f"{name:<15} {size:<26} {rate:>9.1f}")


if __name__ == "__main__":
    main()
