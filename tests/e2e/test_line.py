"""A labelled data set becomes a line: ``exdd line add``, real nights, quarantine release.

Real components throughout: the line's git + DVC workspace, real image files of many
sizes, ``exdd nightly`` and ``airflow dags test`` runs of the new line's DAG, the KSDD2
download from a real HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from pathlib import Path

import pytest
import yaml
from airflow_helpers import OPEN_GATE, Line, airflow, airflow_env, setup_airflow
from line_helpers import platform_params, uncommitted, varied_manifest
from test_ksdd2_download import ksdd2_zip, server  # noqa: F401 (fixture)

from exdd.cli import main
from exdd.config import GateConfig, load_params
from exdd.data.readers import load_samples
from exdd.line.gate import benchmark_samples
from exdd.line.intake.release import RELEASES_NAME, list_quarantine
from exdd.line.registry import CHAMPION, Registry
from exdd.line.workspace import Workspace, drop_into_inbox

pytestmark = pytest.mark.slow

NIGHT = "2025-06-01T02:00:00+00:00"


def outcome(workspace: Path, run_id: str) -> dict:
    return json.loads((workspace / "reports/outcomes" / f"{run_id}.json").read_text())


def inbox_images(inbox: Path) -> list[str]:
    with open(inbox / "labels.csv", newline="") as f:
        return [row["image"] for row in csv.DictReader(f)]


def manifest_rows(workspace: Path) -> list[dict[str, str]]:
    manifest = workspace / "data/dataset/manifest.csv"
    if not manifest.is_file():
        return []
    with open(manifest, newline="") as f:
        return list(csv.DictReader(f))


def test_manifest_of_45_sizes_becomes_a_line_nightly_then_a_new_camera_in_the_dag(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest, sizes = varied_manifest(tmp_path / "held-out")
    assert len(set(sizes)) >= 45
    params_file = platform_params(tmp_path / "params.yaml", OPEN_GATE)
    assert main(["line", "add", "varied", "--from", str(manifest), "--params",
                 str(params_file)]) == 0
    assert "exdd nightly --line varied" in capsys.readouterr().out

    listed = load_params(params_file).lines
    assert [(line.name, line.workspace) for line in listed] == [("varied", "runs/varied")]
    ws = tmp_path / "runs/varied"
    samples = load_samples(manifest)
    train = [s for s in samples if s.split == "train"]
    bench, bench_hash = benchmark_samples(ws / "data/benchmark")
    assert len(bench) == len(samples) - len(train)
    assert sorted(s.label for s in bench) == sorted(s.label for s in samples if s.split == "test")
    assert len(inbox_images(ws / "data/inbox")) == len(train)
    assert uncommitted(ws) == []

    # night 1, without Airflow: every train image gets through intake, a champion is made
    assert main(["nightly", "--line", "varied", "--params", str(params_file),
                 "--run-id", "night-1"]) == 0
    first = outcome(ws, "night-1")
    assert first["status"] == "published" and first["new_champion"] is True
    assert first["n_accepted"] == first["n_total"] == len(train)
    assert first["n_quarantined"] == 0 and first["drift"] == []
    assert uncommitted(ws) == []
    metrics = json.loads((ws / "models/champion/metrics.json").read_text())
    assert metrics["benchmark_hash"] == bench_hash

    # night 2, through the new line's DAG: a new camera at twice the resolution
    night2, _ = varied_manifest(tmp_path / "new-camera", seed=1, base=(128, 128))
    drop_into_inbox(load_samples(night2, "train"), ws / "data/inbox", load_params(
        ws / "params.yaml").intake)
    env = airflow_env(tmp_path / "airflow", params_file)
    line = Line("varied", tmp_path, ws, params_file)
    setup_airflow(env, line)
    airflow(env, "dags", "test", line.dag_id, NIGHT)
    run_ids = [p.stem for p in (ws / "reports/outcomes").glob("*.json") if p.stem != "night-1"]
    (second,) = [outcome(ws, r) for r in run_ids]
    assert second["n_accepted"] == second["n_total"] == len(load_samples(night2, "train"))
    (event,) = second["drift"]
    assert event["kind"] == "size" and event["change"] > 0.5
    assert second["status"] == "published" and second["champion_version"] == 2
    assert len(manifest_rows(ws)) == 2 * len(train)
    assert uncommitted(ws) == []
    capsys.readouterr()
    assert main(["outcomes", "--line", "varied", "--params", str(params_file), "--last", "2",
                 "--json"]) == 0
    printed = [json.loads(row) for row in capsys.readouterr().out.splitlines()]
    assert [o["run_id"] for o in printed] == ["night-1", second["run_id"]]
    assert main(["outcomes", "--line", "varied", "--params", str(params_file)]) == 0
    assert "drift: image size drift" in capsys.readouterr().out


def test_ksdd2_download_becomes_a_line_gated_with_the_paper_thresholds(
        server, tmp_path: Path) -> None:
    body = ksdd2_zip(top="KolektorSDD2/", pairs=6, shape=(80, 32))
    server.files["/KolektorSDD2.zip"] = body
    data = tmp_path / "ksdd2"
    assert main(["data", "ksdd2", "--out", str(data), "--url", server.url + "/KolektorSDD2.zip",
                 "--sha256", hashlib.sha256(body).hexdigest()]) == 0
    # tiny detector settings, the gate's KSDD2 (paper-profile) defaults
    paper = {**OPEN_GATE, "gate": GateConfig().model_dump()}
    params_file = platform_params(tmp_path / "platform.yaml", paper)
    gate = load_params(params_file).gate
    assert (gate.min_image_auroc, gate.min_pixel_auroc) == (0.90, 0.95)
    assert main(["line", "add", "ksdd2", "--from", str(data), "--params", str(params_file)]) == 0
    ws = tmp_path / "runs/ksdd2"
    assert load_params(ws / "params.yaml").gate == gate

    env = airflow_env(tmp_path / "airflow", params_file)
    line = Line("ksdd2", tmp_path, ws, params_file)
    setup_airflow(env, line)
    log = airflow(env, "dags", "test", line.dag_id, NIGHT)
    assert "state=success" in log
    (path,) = (ws / "reports/outcomes").glob("*.json")
    night = json.loads(path.read_text())
    assert night["n_accepted"] == night["n_total"] == len(load_samples(data, "train"))
    # the gate decided on KSDD2's test split, with the paper-profile thresholds
    bench, bench_hash = benchmark_samples(ws / "data/benchmark")
    assert len(bench) == len(load_samples(data, "test"))
    decision = json.loads((ws / "models/candidate/gate.json").read_text())
    assert decision["benchmark_hash"] == bench_hash
    m = night["metrics"]
    passed = m["image_auroc"] >= 0.90 and m["pixel_auroc"] >= 0.95
    assert night["gate"]["passed"] is passed
    assert night["status"] == ("published" if passed else "gate_failed")
    assert any("threshold 0.9000" in r for r in night["gate"]["reasons"])
    assert any("threshold 0.9500" in r for r in night["gate"]["reasons"])
    assert uncommitted(ws) == []


def test_failed_batch_stays_out_of_training_until_released(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest, _ = varied_manifest(tmp_path / "held-out")
    params_file = platform_params(tmp_path / "params.yaml", OPEN_GATE)
    assert main(["line", "add", "press", "--from", str(manifest), "--params",
                 str(params_file)]) == 0
    ws = tmp_path / "runs/press"
    line_params = ws / "params.yaml"
    raw = yaml.safe_load(line_params.read_text())
    raw["intake"]["size_policy"] = "exact"  # a line set up for one camera size
    line_params.write_text(yaml.safe_dump(raw, sort_keys=False))
    Workspace(ws).commit("press: exact image sizes", ["params.yaml"])
    inbox = ws / "data/inbox"
    good = inbox_images(inbox)
    png = (inbox / good[0]).read_bytes()
    (inbox / "broken.png").write_bytes(png[: len(png) // 2])  # really wrong: stays out
    head = Workspace(ws).head()

    assert main(["nightly", "--line", "press", "--params", str(params_file),
                 "--run-id", "night-1"]) == 0
    night = outcome(ws, "night-1")
    assert night["status"] == "intake_failed" and night["gate"]["passed"] is None
    assert night["n_accepted"] == 0 and night["n_quarantined"] == len(good) + 1
    assert night["n_held"] >= 1  # the batch's one image at the usual size
    assert manifest_rows(ws) == [] and not (ws / "models/candidate/checksums.json").exists()
    assert uncommitted(ws) == []  # the failed night is committed, nothing left over
    log = Workspace(ws).git("log", "--format=%s", f"{head}..HEAD")
    assert f"intake of batch {night['batch']} failed, held in quarantine" in log

    capsys.readouterr()
    assert main(["quarantine", "list", "--line", "press", "--params", str(params_file),
                 "--json"]) == 0
    held = [json.loads(row) for row in capsys.readouterr().out.splitlines()]
    assert {h["file"] for h in held if not h["with_image"]} == {*good, "broken.png"}
    assert {h["batch"] for h in held} == {night["batch"]}
    checks = {h["file"]: h["checks"] for h in held}
    assert any("size policy (exact)" in c for c in checks[good[-1]])
    assert checks["broken.png"][0] == "file decodes as an image"

    # the cause is fixed (the line's camera sizes vary), the operator releases the batch
    raw["intake"]["size_policy"] = "aspect"
    line_params.write_text(yaml.safe_dump(raw, sort_keys=False))
    Workspace(ws).commit("press: sizes vary", ["params.yaml"])
    assert main(["quarantine", "release", "--line", "press", "--params", str(params_file),
                 "--batch", night["batch"], "--reason", "sizes vary on this line",
                 "--who", "alice"]) == 0
    rows = manifest_rows(ws)
    assert len(rows) == len(good) and {r["split"] for r in rows} == {"train"}
    defects = [r for r in rows if r["label"] == "defect"]
    assert defects and all(r["mask"] for r in defects)
    left = list_quarantine(ws / "data/dataset")
    assert [(h.key, h.checks[0]) for h in left] == [
        (f"{night['batch']}/broken.png", "file decodes as an image")]
    assert left[0].batch != night["batch"]  # re-validated: quarantined again by the release
    (record,) = [json.loads(r) for r in
                 (ws / "data/dataset/quarantine" / RELEASES_NAME).read_text().splitlines()]
    assert (record["who"], record["reason"], record["batch"]) == (
        "alice", "sizes vary on this line", night["batch"])
    assert len(record["files"]) == len(held) and record["passed"] is True
    assert uncommitted(ws) == []
    assert "quarantine release" in Workspace(ws).git("log", "-1", "--format=%s")
    params = load_params(line_params)
    params.publish.line = "press"
    assert Registry(params, ws).alias(CHAMPION) is None  # nothing was trained


def test_line_add_keeps_the_platform_file_and_refuses_what_it_cannot_make(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The repository's own params.yaml as the platform file: the demo line and every
    comment stay; a second line of a name, or a data set without test split, changes nothing."""
    manifest, _ = varied_manifest(tmp_path / "held-out")
    params_file = tmp_path / "platform.yaml"
    shutil.copyfile(Path(__file__).resolve().parents[2] / "params.yaml", params_file)
    before = params_file.read_text()
    assert main(["line", "add", "press-2", "--from", str(manifest), "--params",
                 str(params_file), "--workspace", str(tmp_path / "elsewhere"),
                 "--batches", "3"]) == 0
    after = params_file.read_text()
    assert after.startswith(before) and after[len(before):] == (
        "  - name: press-2\n    workspace: elsewhere\n")
    assert [line.name for line in load_params(params_file).lines] == ["demo", "press-2"]
    ws = tmp_path / "elsewhere"
    assert (ws / "data/benchmark.dvc").is_file() and uncommitted(ws) == []

    # three nightly batches: the first in the inbox, the others staged until fed
    train = load_samples(manifest, "train")
    inbox = ws / "data/inbox"
    assert len(inbox_images(inbox)) == len(train[0::3])
    assert sorted(p.name for p in (ws / "data/staged").iterdir()) == ["002", "003"]
    assert main(["line", "feed", "press-2", "--params", str(params_file)]) == 0
    # not validated yet: the inbox now holds both batches, one sidecar listing both
    fed = inbox_images(inbox)
    assert len(fed) == len(set(fed)) == len(train[0::3]) + len(train[1::3])
    assert all((inbox / name).is_file() for name in fed)
    assert main(["line", "feed", "press-2", "--params", str(params_file)]) == 0
    assert len(inbox_images(inbox)) == len(train)
    capsys.readouterr()
    assert main(["line", "feed", "press-2", "--params", str(params_file)]) == 2
    assert "no staged batch left" in capsys.readouterr().err
    assert uncommitted(ws) == []

    capsys.readouterr()
    assert main(["line", "add", "press-2", "--from", str(manifest), "--params",
                 str(params_file)]) == 2
    assert "a line named 'press-2' exists already" in capsys.readouterr().err
    train_only = tmp_path / "train-only.csv"
    train_only.write_text("".join(r for r in manifest.read_text().splitlines(True)
                                  if not r.rstrip().endswith(",test")))
    shutil.copytree(manifest.parent / "images", tmp_path / "images")
    shutil.copytree(manifest.parent / "masks", tmp_path / "masks")
    assert main(["line", "add", "press-3", "--from", str(train_only), "--params",
                 str(params_file)]) == 2
    assert "the test split is empty" in capsys.readouterr().err
    assert params_file.read_text() == after and not (tmp_path / "runs/press-3").exists()
