"""Online scoring: ``exdd serve`` over loopback HTTP against in-process ``predict``.

    TQDM_DISABLE=1 python bench/bench_serve.py --data ../shared/data/magnetic-tile/split.csv \
        --model MODEL_DIR

``--model`` is a model directory (``exdd fit``; with its ``metrics.json`` from ``exdd
evaluate`` the flag threshold is the real one). The bench registers it as the champion of
a throw-away line (sqlite MLflow store in a temp folder), starts ``exdd serve`` for that
line in its own process, and in the same run:

- in-process: ``ExDD.predict([path])`` per test image (latency of one image), the same
  from the file's bytes as the service scores them (check, temporary file, predict), and
  one ``predict`` over all of them (throughput);
- over HTTP: each image's file bytes as a raw ``POST /v1/score``, from 1, 4 and 16
  concurrent clients (one keep-alive connection each): latency p50/p95/p99, images/s, and
  the server's CPU time per second of wall time (2.0 = both cores busy).
"""

from __future__ import annotations

from exdd import runtime

runtime.configure()  # an entry point: before torch or faiss load (exdd/runtime.py)

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import mlflow
import numpy as np
import yaml

from exdd.config import Params, ServeConfig
from exdd.data.readers import load_samples, read_image
from exdd.detector.model import ExDD
from exdd.detector.modelio import model_hash
from exdd.line.pyfunc import log_pyfunc
from exdd.line.registry import CHAMPION, Registry, fluent_store
from exdd.inference.encoded import check_image, score_bytes

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from serve_helpers import ServeProcess  # noqa: E402 - the tests' server process runner

CONCURRENCY = (1, 4, 16)
LINE = "bench"
WARMUP_REQUESTS = 4
READY_TIMEOUT_S = 900.0  # torch import, download and warm-up take minutes on a loaded machine


def percentiles(ms: list[float]) -> dict[str, float]:
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    return {"p50_ms": float(p50), "p95_ms": float(p95), "p99_ms": float(p99)}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def champion_line(root: Path, model_dir: Path, threshold: float, example: Path) -> Path:
    """A line whose registry holds ``model_dir`` as its champion; returns the lines file."""
    workspace = root / LINE
    workspace.mkdir()
    params = Params()
    params.publish.line = LINE
    (workspace / "params.yaml").write_text(yaml.safe_dump(params.model_dump(mode="json")))
    registry = Registry(params, workspace)
    model = ExDD.load(model_dir)
    rgb = read_image(example, model.data.image_height, model.data.image_width)
    experiment = registry.experiment_id()
    with fluent_store(registry.uri), mlflow.start_run(experiment_id=experiment) as run:
        uri = log_pyfunc(model_dir, threshold, rgb)
    version = registry.register(uri, run.info.run_id, model_hash(model_dir),
                                {"threshold": str(threshold)})
    registry.set_alias(CHAMPION, version)
    lines = root / "lines.yaml"
    lines.write_text(yaml.safe_dump({"lines": [{"name": LINE, "workspace": str(workspace)}],
                                     "serve": {"max_images": 64}}))
    return lines


def in_process(model: ExDD, paths: list[Path]) -> dict[str, float]:
    model.predict(paths[:WARMUP_REQUESTS])
    ms = []
    for path in paths:
        start = time.perf_counter()
        model.predict([path])
        ms.append((time.perf_counter() - start) * 1e3)
    start = time.perf_counter()
    model.predict(paths)
    return {**percentiles(ms), "batch_images_per_s": len(paths) / (time.perf_counter() - start)}


def in_process_bytes(model: ExDD, blobs: list[bytes]) -> dict[str, float]:
    """What the service does per request without HTTP: check the bytes, score them."""
    cfg = ServeConfig()
    ms = []
    for data in blobs:
        start = time.perf_counter()
        check_image(data, "bench", cfg.formats, cfg.max_pixels)
        score_bytes(model, [data])
        ms.append((time.perf_counter() - start) * 1e3)
    return percentiles(ms)


def over_http(server: ServeProcess, blobs: list[bytes], clients: int) -> dict[str, float]:
    """Every image once, spread over ``clients`` threads with a connection each."""
    ms: list[float] = []
    failures: list[int] = []
    lock = threading.Lock()

    def client(share: list[bytes]) -> None:
        with httpx.Client(base_url=server.url, timeout=120.0) as http:
            for data in share:
                start = time.perf_counter()
                status = http.post("/v1/score", content=data).status_code
                with lock:
                    ms.append((time.perf_counter() - start) * 1e3)
                    if status != 200:
                        failures.append(status)

    threads = [threading.Thread(target=client, args=(blobs[i::clients],))
               for i in range(clients)]
    cpu, wall = cpu_seconds(server.proc.pid), time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - wall
    busy = (cpu_seconds(server.proc.pid) - cpu) / wall
    assert not failures, f"failed requests: {failures[:5]}"
    return {**percentiles(ms), "images_per_s": len(blobs) / wall, "server_cores_busy": busy}


def main() -> None:
    paths = [s.image for s in load_samples(ARGS.data, "test")][: ARGS.images]
    blobs = [p.read_bytes() for p in paths]
    metrics = Path(ARGS.model) / "metrics.json"
    threshold = json.loads(metrics.read_text())["threshold"] if metrics.is_file() else 0.0
    model = ExDD.load(ARGS.model)
    print(f"{len(paths)} test images of {ARGS.data}, model input "
          f"{model.data.image_height}x{model.data.image_width}, "
          f"batch {model.model.runtime.batch_size}")
    figures: dict[str, dict[str, float]] = {"in_process": in_process(model, paths),
                                            "in_process_bytes": in_process_bytes(model, blobs)}
    del model
    with tempfile.TemporaryDirectory(prefix="exdd-bench-serve-") as tmp:
        lines = champion_line(Path(tmp), Path(ARGS.model), threshold, paths[0])
        server = ServeProcess(lines, Path(tmp) / "serve.log", line=LINE)
        try:
            server.wait("/ready", timeout=READY_TIMEOUT_S)
            for data in blobs[:WARMUP_REQUESTS]:
                server.client.post("/v1/score", content=data)
            for clients in CONCURRENCY:
                figures[f"http_c{clients}"] = over_http(server, blobs, clients)
        finally:
            server.stop()
    print(f"{'':14}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'images/s':>10}{'cores':>7}")
    for name, f in figures.items():
        rate = f.get("images_per_s", f.get("batch_images_per_s", 0.0))
        print(f"{name:14}{f['p50_ms']:9.1f}{f['p95_ms']:9.1f}{f['p99_ms']:9.1f}{rate:10.1f}"
              f"{f.get('server_cores_busy', float('nan')):7.2f}")
    ratio = figures["http_c1"]["p50_ms"] / figures["in_process"]["p50_ms"]
    print(f"median latency at concurrency 1: {ratio:.3f} x in-process predict of one image")
    if ARGS.json:
        Path(ARGS.json).write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="data set folder or manifest CSV (its test split is sent)")
    ap.add_argument("--model", required=True, help="model directory (exdd fit)")
    ap.add_argument("--images", type=int, default=64, help="test images used")
    ap.add_argument("--json", help="write the figures here")
    ARGS = ap.parse_args()
    main()
