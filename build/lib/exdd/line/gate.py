"""The promotion gate: may this candidate replace the line's champion?

A candidate passes only if its image and pixel AUROC on the benchmark split reach the
line's thresholds and neither trails the champion's by more than the tolerance, both
measured on the same split (a benchmark is identified by the hash of its files; figures
made on another split are re-scored). Every decision, pass or fail, is written with its
reasons to ``gate.json`` beside the model and to an MLflow run; a failing candidate is
registered under the alias ``rejected``, never ``champion``.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from exdd.config import Params
from exdd.data.readers import Sample, load_samples, read_image
from exdd.errors import ModelError
from exdd.detector.model import ExDD, data_fingerprint
from exdd.detector.modelio import model_hash, verify, write_annotation
from exdd.evaluation.evaluate import benchmark_report
from exdd.evaluation.report import MetricsReport
from exdd.line.registry import CHAMPION, REJECTED, TAG_BENCHMARK, TAG_GATE, Overlays, Registry

GATE_FILE = "gate.json"
GATED_METRICS = ("image_auroc", "pixel_auroc")  # the gate's policy: a subset of the figures


@dataclass
class GateDecision:
    """The verdict on one candidate, with every check's outcome in ``reasons``."""

    passed: bool
    reasons: list[str]
    metrics: dict[str, float]
    champion_metrics: dict[str, float] | None
    model_hash: str = ""
    benchmark_hash: str = ""
    champion_version: int | None = None
    run_id: str | None = None
    model_uri: str | None = None
    rejected_version: int | None = None
    decided_at: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def read_gate(model_dir: Path) -> GateDecision | None:
    """The decision recorded beside a model, or None when it was never gated."""
    path = Path(model_dir) / GATE_FILE
    if not path.is_file():
        return None
    try:
        return GateDecision(**json.loads(path.read_text()))
    except (json.JSONDecodeError, TypeError) as err:
        raise ModelError(f"{path}: not a gate decision ({err})") from None


def benchmark_samples(benchmark: Path) -> tuple[list[Sample], str]:
    """The benchmark's test split and its hash (content of its images, masks and labels)."""
    samples = load_samples(benchmark, "test")
    return samples, data_fingerprint(samples)


def metrics_on(model_dir: Path, samples: list[Sample], bench_hash: str,
               record: bool = True) -> MetricsReport:
    """Metrics of a model on the benchmark: its metrics.json when made on this very split,
    else a fresh evaluation (written to metrics.json when ``record``)."""
    known = MetricsReport.beside(model_dir)
    if known is not None and known.benchmark_hash == bench_hash:
        return known
    metrics = benchmark_report(ExDD.load(model_dir), samples, bench_hash)
    if record:
        metrics.write_beside(model_dir)
    return metrics


def overlay_set(model: ExDD, samples: list[Sample], count: int) -> Overlays:
    """Images, maps and titles for the MLflow overlay grid: defects first, then normals."""
    chosen = ([s for s in samples if s.label == 1][: (count + 1) // 2]
              + [s for s in samples if s.label == 0])[:count]
    pred = model.predict([s.image for s in chosen])
    images = [read_image(s.image) for s in chosen]  # own shape: the map is fitted to it
    titles = [f"{'defect' if s.label else 'normal'} {s.image.stem}: {score:.3f}"
              for s, score in zip(chosen, pred.scores)]
    return images, list(pred.maps), titles


def judge(metrics: dict[str, float], champion: dict[str, float] | None,
          champion_version: int | None, params: Params) -> tuple[bool, list[str]]:
    """Apply the thresholds and the no-regression rule; one reason per check."""
    cfg = params.gate
    checks: list[tuple[bool, str]] = []
    for key, floor in zip(GATED_METRICS, (cfg.min_image_auroc, cfg.min_pixel_auroc)):
        ok = metrics[key] >= floor
        relation = ">=" if ok else "<"
        checks.append((ok, f"{key} {metrics[key]:.4f} {relation} threshold {floor:.4f}"))
    if champion is None:
        checks.append((True, "no champion yet: nothing to compare against"))
    else:
        for key in GATED_METRICS:
            ok = metrics[key] >= champion[key] - cfg.regression_tolerance
            verdict = "not worse" if ok else "regression"
            checks.append((ok, f"{key} {metrics[key]:.4f} vs champion v{champion_version} "
                               f"{champion[key]:.4f} (tolerance {cfg.regression_tolerance}): "
                               f"{verdict}"))
    return all(ok for ok, _ in checks), [("PASS " if ok else "FAIL ") + r for ok, r in checks]


def _champion_metrics(registry: Registry, params: Params, repo: Path, samples: list[Sample],
                      bench_hash: str) -> tuple[dict[str, float] | None, int | None]:
    """The champion's figures on this benchmark (re-scored when made on another split)."""
    champion = registry.alias(CHAMPION)
    if champion is None:
        return None, None
    version = int(champion.version)
    tags = champion.tags
    if tags.get(TAG_BENCHMARK) == bench_hash and all(k in tags for k in GATED_METRICS):
        return {k: float(tags[k]) for k in GATED_METRICS}, version
    # Score the champion's files (checked-out copy, left untouched as DVC tracks it, or
    # the registry's), verified against the model hash its version recorded.
    from exdd.line.champion import load_version

    with tempfile.TemporaryDirectory(prefix="exdd-champion-") as tmp:
        loaded = load_version(registry, champion, Path(tmp), repo / params.publish.champion_dir)
        return metrics_on(loaded.model_dir, samples, bench_hash, record=False).scalars(), version


def run_gate(candidate: Path, benchmark: Path, params: Params, repo: Path) -> GateDecision:
    """Gate ``candidate`` against the thresholds and the champion; record the decision."""
    candidate, repo = Path(candidate), Path(repo)
    verify(candidate)
    digest = model_hash(candidate)
    samples, bench_hash = benchmark_samples(Path(benchmark))
    metrics = metrics_on(candidate, samples, bench_hash)
    figures = metrics.scalars()
    registry = Registry(params, repo)
    champion, champion_version = _champion_metrics(registry, params, repo, samples, bench_hash)
    passed, reasons = judge(figures, champion, champion_version, params)
    decision = GateDecision(
        passed, reasons, figures, champion, digest, bench_hash,
        champion_version, decided_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    overlays = overlay_set(ExDD.load(candidate), samples, params.gate.overlay_images)
    decision.run_id, decision.model_uri = registry.log_candidate(
        candidate, metrics.to_json(), decision.to_json(), overlays)
    if not passed:
        version_tags = {TAG_GATE: "false", TAG_BENCHMARK: bench_hash,
                        **{k: str(v) for k, v in decision.metrics.items()}}
        decision.rejected_version = registry.register(
            decision.model_uri, decision.run_id, digest, version_tags)
        registry.set_alias(REJECTED, decision.rejected_version)
    write_annotation(candidate, GATE_FILE, decision.to_json())
    return decision
