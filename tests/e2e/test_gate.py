"""The promotion gate on real models, a real line workspace and a real MLflow sqlite store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlops_helpers import fit_candidate, fit_mislabelled, make_line, training_set, tree_digest

from exdd.cli import main as exdd_main
from exdd.config import Params
from exdd.data.readers import load_samples
from exdd.data.demo import make_demo
from exdd.errors import ModelError
from exdd.evaluation.evaluate import evaluate
from exdd.line.gate import GATE_FILE, judge, read_gate, run_gate
from exdd.detector.model import ExDD, data_fingerprint
from exdd.detector.modelio import model_hash
from exdd.line.publish import publish
from exdd.evaluation.report import scalar_metrics
from exdd.line.registry import CHAMPION, REJECTED, Registry, tracking_uri


@pytest.fixture(scope="module")
def line(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("gate")
    repo, params = make_line(root, str(root / "remote"))
    train = training_set(root, params)
    models = {
        "good": fit_candidate(params, train, root / "good", seed=0),
        "good2": fit_candidate(params, train, root / "good2", seed=1),
        "bad": fit_mislabelled(params, train, root / "bad"),
    }
    return root, repo, params, models


def _client(repo: Path, params: Params) -> MlflowClient:
    uri = tracking_uri(params.publish, repo)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def test_first_candidate_passes_and_everything_is_recorded(line) -> None:
    _, repo, params, models = line
    decision = run_gate(models["good"], repo / params.gate.benchmark, params, repo)

    assert decision.passed, decision.reasons
    assert decision.champion_metrics is None and decision.champion_version is None
    assert decision.model_hash == model_hash(models["good"])
    assert all(r.startswith("PASS") for r in decision.reasons) and len(decision.reasons) == 3
    assert decision.metrics["image_auroc"] >= params.gate.min_image_auroc
    assert read_gate(models["good"]) == decision  # gate.json holds exactly the decision

    client = _client(repo, params)
    run = client.get_run(decision.run_id)
    assert run.data.tags["exdd.gate_passed"] == "true"
    assert run.data.tags["exdd.model_hash"] == decision.model_hash
    assert run.data.metrics["pixel_auroc"] == pytest.approx(decision.metrics["pixel_auroc"])
    assert run.data.params["model.seed"] == "0"
    logged = {a.path for a in client.list_artifacts(decision.run_id, "plots")}
    assert logged == {"plots/roc_pr.png", "plots/overlays.png"}
    assert json.loads(Path(client.download_artifacts(decision.run_id, GATE_FILE,
                                                     str(line[0]))).read_text())["passed"]
    # A passing candidate is not registered by the gate: only publishing creates versions.
    assert Registry(params, repo).versions() == []


def test_failing_candidate_is_registered_as_rejected_never_champion(line) -> None:
    _, repo, params, models = line
    decision = run_gate(models["bad"], repo / params.gate.benchmark, params, repo)

    assert not decision.passed
    failed = [r for r in decision.reasons if r.startswith("FAIL")]
    assert failed and all("threshold" in r for r in failed)
    assert read_gate(models["bad"]).passed is False

    registry = Registry(params, repo)
    rejected = registry.alias(REJECTED)
    assert int(rejected.version) == decision.rejected_version
    assert rejected.tags["model_hash"] == model_hash(models["bad"])
    assert rejected.tags["gate_passed"] == "false"
    assert registry.alias(CHAMPION) is None
    assert _client(repo, params).get_run(decision.run_id).data.tags["exdd.gate_passed"] == "false"
    with pytest.raises(ModelError, match="no passing gate decision"):
        publish(models["bad"], params, repo)


def test_champion_is_rescored_when_the_benchmark_changed(line) -> None:
    root, repo, params, models = line
    published = publish(models["good"], params, repo)  # gated in the first test
    other = make_demo(root / "other-benchmark", params.demo, seed=3,
                      defects=params.synth.procedural)
    samples = load_samples(other, "test")
    champion_dir = repo / params.publish.champion_dir
    champion_files = tree_digest(champion_dir)

    decision = run_gate(models["good2"], other, params, repo)

    assert tree_digest(champion_dir) == champion_files  # the DVC-tracked copy is untouched
    rescored = scalar_metrics(evaluate(ExDD.load(champion_dir), samples))
    stored = Registry(params, repo).alias(CHAMPION).tags
    assert decision.champion_version == published.version
    assert decision.benchmark_hash == data_fingerprint(samples)
    assert stored["benchmark_hash"] != decision.benchmark_hash
    assert decision.champion_metrics["image_auroc"] == pytest.approx(rescored["image_auroc"])
    assert decision.champion_metrics["pixel_auroc"] == pytest.approx(rescored["pixel_auroc"])
    assert sum("vs champion" in r for r in decision.reasons) == 2


def test_no_regression_rule() -> None:
    params = Params.model_validate({"gate": {"min_image_auroc": 0.5, "min_pixel_auroc": 0.5,
                                             "regression_tolerance": 0.01}})
    champion = {"image_auroc": 0.95, "pixel_auroc": 0.97}
    worse = {"image_auroc": 0.93, "pixel_auroc": 0.975}

    passed, reasons = judge(worse, champion, 4, params)
    assert not passed
    assert [r for r in reasons if r.startswith("FAIL")] == [
        "FAIL image_auroc 0.9300 vs champion v4 0.9500 (tolerance 0.01): regression"]

    params.gate.regression_tolerance = 0.05
    assert judge(worse, champion, 4, params)[0]


def test_cli_exit_status_says_the_verdict(line, capsys: pytest.CaptureFixture[str]) -> None:
    _, repo, _, models = line
    assert exdd_main(["gate", "--candidate", str(models["bad"]), "--repo", str(repo)]) == 1
    assert "gate FAILED" in capsys.readouterr().out
    assert exdd_main(["gate", "--candidate", str(models["good2"]), "--repo", str(repo)]) == 0
    assert "gate PASSED" in capsys.readouterr().out
