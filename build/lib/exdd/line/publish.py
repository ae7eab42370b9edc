"""Publishing: make a gated model the line's champion everywhere, or nowhere.

A line an operator pinned (a rollback, ``exdd.line.champion``) publishes nothing until it is
unpinned.

The champion's files live in the workspace's champion folder, tracked by DVC. Publishing
copies the model there, pushes it to the DVC remote, registers an MLflow version, commits
and tags (``model-<line>-v<N>``, N = the MLflow version) and moves the ``champion`` alias,
in that order: nothing visible is created before the push succeeded, and the alias move
comes last. Any failure returns the workspace (HEAD, champion folder, tag) to where it was,
so the previous champion stays the champion; a re-run completes the job, and publishing
the same model again (same model hash) makes no second version or tag.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from exdd.config import Params
from exdd.data.readers import Sample
from exdd.errors import ExddError, ModelError
from exdd.fsutil import atomic_dir, sha256_file
from exdd.evaluation.report import METRICS_FILE
from exdd.line.audit import append_audit, current_user, utc_now
from exdd.line.champion import refuse_if_pinned
from exdd.line.gate import GATE_FILE, GateDecision, benchmark_samples, read_gate
from exdd.detector.model import ExDD
from exdd.detector.modelio import CHECKSUMS, CONTENT_FILES, META, model_hash, verify
from exdd.line.registry import (
    CHAMPION, REJECTED, TAG_BENCHMARK, TAG_GATE, TAG_GIT, TAG_HASH, Registry, model_name,
)
from exdd.line.workspace import Workspace

PROBE_FILE = "probe.json"
PAUSE_ENV = "EXDD_PUBLISH_PAUSE_AFTER_REGISTER_S"
# The pipeline files a published version pins, besides the champion's .dvc file.
PIPELINE_FILES = ("dvc.yaml", "dvc.lock", "params.yaml", ".dvc/config")


@dataclass(frozen=True)
class PublishedModel:
    """One published version: its git tag, MLflow version number and model hash."""

    tag: str
    version: int
    model_hash: str


def tag_name(line: str, version: int) -> str:
    return f"model-{line}-v{version}"


def published_versions(ws: Workspace, line: str) -> list[tuple[PublishedModel, dict[str, Any]]]:
    """Every version published for ``line``, oldest first, with its tag's record."""
    found = []
    for tag in ws.tags(f"model-{line}-v*"):
        _, _, body = tag.message.partition("\n\n")
        try:
            info = json.loads(body)
        except json.JSONDecodeError:
            continue  # a hand-made tag of that name: not one of ours
        found.append((PublishedModel(tag.name, int(info["version"]), info["model_hash"]), info))
    return found


def probe_scores(model_dir: Path, samples: list[Sample], count: int, repo: Path) -> dict[str, Any]:
    """Scores of a fixed probe set (the first benchmark images), exact to the bit.

    Stored with each published version so a rollback can be checked to reproduce them.
    """
    chosen = sorted(samples, key=lambda s: str(s.image))[:count]
    pred = ExDD.load(model_dir).predict([s.image for s in chosen])
    return {
        "images": [{"path": os.path.relpath(s.image, repo), "sha256": sha256_file(s.image)}
                   for s in chosen],
        "scores": [float(x).hex() for x in pred.scores],
        "scores_sha256": hashlib.sha256(pred.scores.astype("<f8").tobytes()).hexdigest(),
        "maps_sha256": hashlib.sha256(pred.maps.astype("<f4").tobytes()).hexdigest(),
    }


def _stage_champion(model_dir: Path, target: Path, probe: dict[str, Any]) -> None:
    """The model's files, its metrics and gate decision, and the probe scores."""
    with atomic_dir(target) as staging:
        for name in (*CONTENT_FILES, CHECKSUMS, METRICS_FILE, GATE_FILE):
            if (model_dir / name).is_file():
                shutil.copy2(model_dir / name, staging / name)
        (staging / PROBE_FILE).write_text(json.dumps(probe, indent=2, sort_keys=True) + "\n")


def _tag_message(params: Params, version: int, digest: str, dvc_file: str, model_dir: Path,
                 gate: GateDecision) -> str:
    """Subject line, then the version's record as JSON (read back by published_versions)."""
    meta = json.loads((model_dir / META).read_text())
    record = {
        "line": params.publish.line, "registered_model": model_name(params), "version": version,
        "model_hash": digest, "dvc_file": dvc_file, "metrics": gate.metrics,
        "benchmark_hash": gate.benchmark_hash, "data_hashes": meta.get("data_hashes", {}),
        "gate": gate.reasons, "published_at": utc_now(),
    }
    subject = f"{model_name(params)} version {version} (model {digest[:12]})"
    return f"{subject}\n\n{json.dumps(record, indent=2, sort_keys=True)}\n"


def _passing_gate(model_dir: Path, digest: str, registry: Registry) -> GateDecision:
    """The model's gate decision, if it passed, is this model's and is still current."""
    gate = read_gate(model_dir)
    if gate is None or not gate.passed:
        raise ModelError(f"{model_dir}: no passing gate decision ({GATE_FILE}); "
                         "run `exdd gate --candidate` first")
    if gate.model_hash != digest:
        raise ModelError(f"{model_dir / GATE_FILE}: decision is for model {gate.model_hash[:12]}, "
                         f"not this one ({digest[:12]}); run the gate again")
    champion = registry.alias(CHAMPION)
    if champion is not None and champion.tags.get(TAG_HASH) == digest:
        return gate  # already the champion: a re-run
    refuse_if_pinned(registry, digest)
    now = int(champion.version) if champion is not None else None
    if now != gate.champion_version:
        raise ModelError(f"{model_dir / GATE_FILE}: the gate compared against champion "
                         f"v{gate.champion_version}, the champion is now v{now}; gate again")
    return gate


def _pause_for_crash_tests() -> None:
    """Test hook: with ``$EXDD_PUBLISH_PAUSE_AFTER_REGISTER_S`` set, wait that long after the
    MLflow version exists and before git and the alias move, so that a test can kill the
    process at exactly this point (a race on timing alone passes or fails with the load)."""
    seconds = float(os.environ.get(PAUSE_ENV, "0") or 0)
    if seconds > 0:
        time.sleep(seconds)


def publish(model_dir: Path, params: Params, repo: Path) -> PublishedModel:
    """Make ``model_dir`` (gated, passed) the champion: DVC push, MLflow version, git tag,
    alias; all or nothing, idempotent by model hash."""
    model_dir, repo = Path(model_dir).resolve(), Path(repo).resolve()
    ws, cfg = Workspace(repo), params.publish
    verify(model_dir)
    digest = model_hash(model_dir)
    registry = Registry(params, repo)
    gate = _passing_gate(model_dir, digest, registry)
    dvc_file = f"{cfg.champion_dir}.dvc"
    for record, info in published_versions(ws, cfg.line):
        if record.model_hash == digest:
            return _complete(ws, registry, params, record, info["dvc_file"])
    samples, _ = benchmark_samples(repo / params.gate.benchmark)
    probe = probe_scores(model_dir, samples, cfg.probe_images, repo)
    benchmark_dvc = f"{params.gate.benchmark.rstrip('/')}.dvc"
    with ws.transaction([dvc_file], cfg.dvc_remote) as txn:
        _stage_champion(model_dir, ws.path(cfg.champion_dir), probe)
        ws.add(cfg.champion_dir)
        targets = [dvc_file]
        if ws.path(benchmark_dvc).is_file():
            targets.append(benchmark_dvc)
        if ws.path("dvc.lock").is_file():
            targets.append("dvc.yaml")  # the pipeline's data and model: the version's lineage
        ws.push(targets, cfg.dvc_remote)
        version = registry.register(gate.model_uri, gate.run_id, digest, {
            TAG_GATE: "true", TAG_BENCHMARK: gate.benchmark_hash,
            **{k: str(v) for k, v in gate.metrics.items()},
        })
        tag = tag_name(cfg.line, version)
        registry.tag_version(version, {TAG_GIT: tag})
        _pause_for_crash_tests()
        ignore = str(Path(cfg.champion_dir).parent / ".gitignore")
        ws.commit(f"publish {tag}", [dvc_file, ignore, benchmark_dvc, *PIPELINE_FILES])
        txn.tag(ws, tag, _tag_message(params, version, digest, dvc_file, model_dir, gate))
        registry.clear_alias(REJECTED, version)
        registry.set_alias(CHAMPION, version)
    append_audit(repo, params, {"event": "publish", "who": current_user(), "tag": tag,
                                "version": version, "model_hash": digest})
    return PublishedModel(tag, version, digest)


def _complete(ws: Workspace, registry: Registry, params: Params, record: PublishedModel,
              dvc_file: str) -> PublishedModel:
    """A model already tagged: finish an interrupted publish, or do nothing."""
    champion = registry.alias(CHAMPION)
    if champion is not None and int(champion.version) == record.version:
        return record
    if ws.show(record.tag, dvc_file) != ws.show("HEAD", dvc_file):
        raise ExddError(f"model {record.model_hash[:12]} was published as {record.tag} and is "
                        f"no longer current; use `exdd rollback --to {record.tag}` to restore it")
    ws.restore(dvc_file, params.publish.dvc_remote)
    registry.set_alias(CHAMPION, record.version)
    append_audit(ws.root, params, {"event": "publish", "who": current_user(),
                                   "tag": record.tag, "version": record.version,
                                   "model_hash": record.model_hash, "completed": True})
    return record
