"""The DVC pipeline of a line workspace, run for real with ``dvc repro`` on demo data."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlops_helpers import make_line, write_params

from exdd.cli import main as exdd_main
from exdd.config import load_params
from exdd.data.readers import load_samples
from exdd.errors import ExddError
from exdd.detector.model import data_fingerprint
from exdd.detector.modelio import verify
from exdd.line.stages import INTAKE_REPORTS, MANIFEST, METRICS_REPORT, STAGES, dvc_yaml_text
from exdd.line.workspace import Workspace, scrub
from exdd.pipeline import nightly

pytestmark = pytest.mark.slow  # a whole pipeline run, one subprocess per stage

STAGE_NAMES = tuple(s.name for s in STAGES)
# The stages a night runs in-process (the curves are for `dvc plots` only).
NIGHTLY_STAGES = ("validate", "synthesize", "fit", "evaluate")
CANDIDATE = "models/candidate/checksums.json"


def dvc(repo: Path, *args: str) -> subprocess.CompletedProcess:
    """``dvc`` in the workspace, with this venv's ``exdd`` first on PATH."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("EXDD_PARAMS", None)
    proc = subprocess.run(["dvc", *args], cwd=repo, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def line(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("pipeline")
    repo, params = make_line(root, str(root / "remote"))
    first = dvc(repo, "repro")
    return root, repo, params, first.stdout


def test_repro_runs_the_pipeline_end_to_end(line) -> None:
    _, repo, params, out = line
    for stage in STAGE_NAMES:
        assert f"Running stage '{stage}'" in out
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    assert set(lock["stages"]) == set(STAGE_NAMES)
    assert not list((repo / "data/inbox").glob("*.png"))  # every inbox file was filed
    train = load_samples(repo / "data/dataset/manifest.csv", "train")
    assert len(train) == params.demo.train_normal + params.demo.train_defect
    assert len(load_samples(repo / "data/synthetic")) == params.synth.count
    verify(repo / "models/candidate")
    metrics = json.loads((repo / "reports/metrics.json").read_text())
    benchmark = load_samples(repo / params.gate.benchmark, "test")
    assert metrics["benchmark_hash"] == data_fingerprint(benchmark)
    assert metrics["n_test"] == len(benchmark)
    with open(repo / "reports/plots/roc.csv", newline="") as f:
        roc = list(csv.DictReader(f))
    assert [float(r["fpr"]) for r in roc] == [p["fpr"] for p in metrics["roc"]]
    [shown] = json.loads(dvc(repo, "metrics", "show", "--json").stdout).values()  # workspace
    assert shown["data"]["reports/metrics.json"]["data"]["image_auroc"] == metrics["image_auroc"]


def test_second_repro_with_nothing_changed_does_no_work(line) -> None:
    _, repo, _, _ = line
    before = {p: (repo / p).stat().st_mtime_ns for p in (CANDIDATE, "reports/metrics.json",
                                                          "data/dataset/manifest.csv")}
    out = dvc(repo, "repro").stdout
    assert "Running stage" not in out
    for stage in STAGE_NAMES:
        assert f"Stage '{stage}' didn't change, skipping" in out
    assert {p: (repo / p).stat().st_mtime_ns for p in before} == before
    assert "up to date" in dvc(repo, "status").stdout


def test_a_model_param_invalidates_fit_but_not_the_data_stages(line) -> None:
    _, repo, params, _ = line
    original = (repo / "params.yaml").read_text()
    raw = yaml.safe_load(original)
    raw["model"]["scoring"]["knn"] = params.model.scoring.knn + 1
    (repo / "params.yaml").write_text(yaml.safe_dump(raw))
    try:
        changed = json.loads(dvc(repo, "status", "--json").stdout)
    finally:
        (repo / "params.yaml").write_text(original)
    assert "fit" in changed
    assert not {"validate", "synthesize"} & set(changed)
    assert "up to date" in dvc(repo, "status").stdout


def test_pipeline_candidate_is_gated_and_published_with_its_lineage(line, capsys) -> None:
    root, repo, _, _ = line
    assert exdd_main(["gate", "--candidate", str(repo / "models/candidate"),
                      "--repo", str(repo)]) == 0
    assert exdd_main(["publish", "--model", str(repo / "models/candidate"),
                      "--repo", str(repo)]) == 0
    assert "published model-demo-v1" in capsys.readouterr().out
    ws = Workspace(repo)
    # The tag pins the pipeline state that made the model ...
    assert ws.show("model-demo-v1", "dvc.lock") == (repo / "dvc.lock").read_text()
    # ... and the data behind it is on the remote, not only in the local cache.
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    dataset_md5 = next(o["md5"] for o in lock["stages"]["validate"]["outs"]
                       if o["path"] == "data/dataset")
    assert (root / "remote/files/md5" / dataset_md5[:2] / dataset_md5[2:]).is_file()


def _stages(lock: dict, name: str) -> tuple[str, set[str], set[str]]:
    """A dvc.lock stage as (cmd, dep paths, out paths)."""
    entry = lock["stages"][name]
    return (entry["cmd"], {d["path"] for d in entry.get("deps", [])},
            {o["path"] for o in entry.get("outs", [])})


def _rows(repo: Path) -> list[tuple[str, str, str]]:
    with open(repo / MANIFEST, newline="") as f:
        return sorted((r["image"], r["label"], r["split"]) for r in csv.DictReader(f))


def test_nightly_steps_record_what_dvc_repro_makes(line, tmp_path: Path) -> None:
    """The same inbox through the nightly steps (in-process, then `dvc commit`) and through
    `dvc repro`: the same stages, commands, deps and outs, the same data set, synthetic
    set and benchmark figures, and DVC finds nothing to redo."""
    _, repo, params, _ = line
    twin, _ = make_line(tmp_path, str(tmp_path / "remote"))
    platform = tmp_path / "platform.yaml"
    raw = yaml.safe_load((twin / "params.yaml").read_text())
    platform.write_text(yaml.safe_dump(
        {**raw, "lines": [{"name": "twin", "workspace": twin.name, "schedule": None}]}))
    run = nightly.open_run(platform, "twin", "night-1")
    intake = nightly.validate(run)
    nightly.synthesize(run, intake)
    banks = nightly.build_banks(run)
    evaluated = nightly.evaluate(run)

    ours = yaml.safe_load((twin / "dvc.lock").read_text())
    theirs = yaml.safe_load((repo / "dvc.lock").read_text())
    for name in NIGHTLY_STAGES:
        assert _stages(ours, name) == _stages(theirs, name), name
    assert "up to date" in dvc(twin, "status", *NIGHTLY_STAGES).stdout
    assert _rows(twin) == _rows(repo)
    assert len(load_samples(twin / "data/synthetic")) == params.synth.count
    assert banks.n_synthetic == len([s for s in load_samples(repo / "data/synthetic")
                                     if s.label == 1])
    figures = json.loads((repo / METRICS_REPORT).read_text())
    assert evaluated.benchmark_hash == figures["benchmark_hash"]
    assert json.loads((twin / METRICS_REPORT).read_text()).keys() == figures.keys()
    # Both executors file the intake report of a run under reports/intake/<run id>.
    assert Path(intake.report) == twin / INTAKE_REPORTS / "night-1"
    (repro_report,) = (repo / INTAKE_REPORTS).iterdir()
    assert repro_report.name.startswith("validate__")
    assert {p.name for p in repro_report.iterdir()} == {p.name for p in Path(intake.report).iterdir()}


def test_workspace_init_cli(tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "do-not-write-me-anywhere")
    config = write_params(tmp_path / "p.yaml",
                          {"publish": {"s3_endpoint_url": "http://127.0.0.1:9"}})
    target = tmp_path / "ws"
    assert exdd_main(["workspace", "init", str(target), "--params", str(config),
                      "--remote", "s3://line-bucket/demo"]) == 0
    ws = Workspace(target)
    assert ws.git("status", "--porcelain") == ""
    tracked = ws.git("ls-files").splitlines()
    assert {"dvc.yaml", "params.yaml", ".dvc/config", "data/benchmark.dvc"} <= set(tracked)
    dvc_config = (target / ".dvc/config").read_text()
    assert "s3://line-bucket/demo" in dvc_config and "http://127.0.0.1:9" in dvc_config
    assert not any("do-not-write-me-anywhere" in (target / f).read_text() for f in tracked)
    assert "lines" not in yaml.safe_load((target / "params.yaml").read_text())
    assert load_params(target / "params.yaml").publish.s3_endpoint_url == "http://127.0.0.1:9"
    assert (target / "dvc.yaml").read_text() == dvc_yaml_text()
    assert (target / "data/inbox/labels.csv").is_file()

    assert exdd_main(["workspace", "init", str(target), "--params", str(config)]) == 2
    assert "already holds a dvc.yaml" in capsys.readouterr().err


def test_command_errors_never_show_credentials(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIASECRETKEYID")
    ws = Workspace(tmp_path)
    ws.git("init", "-q")
    with pytest.raises(ExddError) as err:
        ws.git("cat-file", "-t", "AKIASECRETKEYID")
    assert "AKIASECRETKEYID" not in str(err.value) and "***" in str(err.value)
    assert scrub("key AKIASECRETKEYID") == "key ***"
