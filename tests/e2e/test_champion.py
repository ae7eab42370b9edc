"""The champion on a real line workspace (git + DVC, MLflow sqlite registry, local DVC
remote): a rollback pins the line against the next night's gate until an operator unpins
it, a rollback to the champion changes nothing, and the champion is only loaded when its
files are the ones its registry version recorded."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from airflow_helpers import Line, make_nightly_line
from mlops_helpers import fit_candidate, training_set

from exdd.cli import main as exdd_main
from exdd.errors import ModelError
from exdd.line.gate import read_gate, run_gate
from exdd.detector.modelio import model_hash
from exdd.pipeline.nightly import open_run, score_images
from exdd.line.publish import publish
from exdd.line.registry import CHAMPION, TAG_HASH, Registry
from exdd.line.workspace import Workspace

pytestmark = pytest.mark.slow

LINE = "press"


@pytest.fixture(scope="module")
def line(tmp_path_factory: pytest.TempPathFactory) -> Line:
    """v1 and v2 published (v2 champion); a demo night waits in the inbox."""
    root = tmp_path_factory.mktemp("champion")
    made = make_nightly_line(root, LINE)
    params = made.params()
    train = training_set(root, params)
    for version in (1, 2):
        model = fit_candidate(params, train, root / f"cand{version}", seed=version)
        assert run_gate(model, made.workspace / params.gate.benchmark, params,
                        made.workspace).passed
        assert publish(model, params, made.workspace).version == version
    return made


def _audit(line: Line) -> list[dict]:
    path = line.workspace / line.params().publish.audit_log
    return [json.loads(x) for x in path.read_text().splitlines()]


def _champion(line: Line) -> int:
    return int(Registry(line.params(), line.workspace).alias(CHAMPION).version)


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = exdd_main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_a_rollback_pins_the_line_until_an_operator_unpins_it(
        line: Line, capsys: pytest.CaptureFixture[str]) -> None:
    repo = ("--repo", str(line.workspace), "--line", LINE)
    code, out, err = _cli(capsys, "rollback", "--to", "v1", "--reason", "v2 misses scratches",
                        "--who", "ana", *repo)
    assert code == 0 and "pinned to it until `exdd unpin`" in out, err
    assert _champion(line) == 1
    entry = _audit(line)[-1]
    assert (entry["event"], entry["who"], entry["pinned"], entry["version"]) == (
        "rollback", "ana", True, 1)
    code, out, _ = _cli(capsys, "models", *repo)
    assert code == 0 and "pinned to v1 by ana" in out and "v2 misses scratches" in out

    # A pinned night: builds, evaluates and gates its candidate, records it, publishes nothing.
    ws = Workspace(line.workspace)
    head = ws.head()
    code, out, _ = _cli(capsys, "nightly", "--line", LINE, "--params", str(line.params_file),
                        "--run-id", "pinned-night")
    assert code == 0, out
    assert f"line {LINE} run pinned-night: pinned" in out
    run = open_run(line.params_file, LINE, "pinned-night")
    outcome = json.loads(run.outcome_file.read_text())
    assert outcome["status"] == "pinned" and outcome["gate"]["passed"] is True
    assert outcome["champion_version"] == 1 and outcome["new_champion"] is False
    assert outcome["pinned"].startswith("pinned to v1 by ana")
    candidate = line.workspace / "models" / "candidate"
    assert outcome["model_hash"] == model_hash(candidate)
    assert outcome["metrics"]["image_auroc"] > 0.0
    decision = read_gate(candidate)
    registry = Registry(line.params(), line.workspace)
    gate_run = registry.client.get_run(decision.run_id)  # the candidate's MLflow record
    assert gate_run.data.tags["exdd.model_hash"] == outcome["model_hash"]
    assert f"candidate {outcome['model_hash'][:12]}" in ws.git("log", "--format=%s",
                                                               f"{head}..HEAD")
    assert _champion(line) == 1 and outcome["n_scored"] > 0  # scored by the pinned champion
    assert ws.git("status", "--porcelain") == ""  # reports and reviews: committed or ignored
    with pytest.raises(ModelError, match="pinned to v1 by ana"):
        publish(candidate, line.params(), line.workspace)

    code, _, err = _cli(capsys, "unpin", "--reason", "v3 reviewed", "--who", "bo", *repo)
    assert code == 0, err
    entry = _audit(line)[-1]
    assert (entry["event"], entry["who"], entry["version"], entry["pinned_by"]) == (
        "unpin", "bo", 1, "ana")
    code, out, _ = _cli(capsys, "models", *repo)
    assert "pinned to" not in out
    assert publish(candidate, line.params(), line.workspace).version == 3
    assert _champion(line) == 3
    code, _, err = _cli(capsys, "unpin", "--reason", "again", *repo)
    assert code == 2 and "is not pinned" in err


def test_a_rollback_to_the_champion_changes_nothing(
        line: Line, capsys: pytest.CaptureFixture[str]) -> None:
    ws = Workspace(line.workspace)
    champion = _champion(line)
    head, entries = ws.head(), len(_audit(line))
    code, out, _ = _cli(capsys, "rollback", "--to", f"v{champion}", "--reason", "keep it",
                        "--repo", str(line.workspace), "--line", LINE)
    assert code == 0 and "is the champion already: nothing rolled back" in out
    assert ws.head() == head and _champion(line) == champion
    assert [e["event"] for e in _audit(line)[entries:]] == ["pin"]  # it pins an unpinned line
    code, out, _ = _cli(capsys, "rollback", "--to", f"v{champion}", "--reason", "keep it",
                        "--repo", str(line.workspace), "--line", LINE)
    assert code == 0 and ws.head() == head and len(_audit(line)) == entries + 1
    assert _cli(capsys, "unpin", "--reason", "done", "--repo", str(line.workspace),
                "--line", LINE)[0] == 0


def _tamper(model_dir: Path) -> None:
    """Change a bank and rewrite checksums.json to match: self-consistent, not the model."""
    bank = model_dir / "bank_normal.npy"
    array = np.load(bank)
    array[0] += 1.0
    bank.unlink()  # the file may be a read-only copy of the DVC cache
    np.save(bank, array)
    sums = json.loads((model_dir / "checksums.json").read_text())
    sums["bank_normal.npy"] = hashlib.sha256(bank.read_bytes()).hexdigest()
    (model_dir / "checksums.json").unlink()
    (model_dir / "checksums.json").write_text(json.dumps(sums, indent=2, sort_keys=True) + "\n")


def test_the_champion_is_loaded_only_as_the_registry_recorded_it(
        line: Line, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    params = line.params()
    champion_dir = line.workspace / params.publish.champion_dir
    version = _champion(line)
    uri = f"models:/exdd-{LINE}@champion"
    images = sorted(str(p) for p in (line.workspace / params.gate.benchmark / "test")
                    .rglob("*.png") if not p.stem.endswith("_GT"))[:3]
    code, out, err = _cli(capsys, "predict", "--model", uri, "--repo", str(line.workspace),
                          "--out", str(tmp_path / "ok"), *images)
    assert code == 0, err
    assert f"version {version}" in out
    with open(tmp_path / "ok" / "scores.csv", newline="") as f:
        assert {r["model_version"] for r in csv.DictReader(f)} == {str(version)}

    _tamper(champion_dir)
    recorded = Registry(params, line.workspace).alias(CHAMPION).tags[TAG_HASH]
    assert model_hash(champion_dir) != recorded
    # A bare directory proves only that its files agree with its own checksums.json ...
    code, out, _ = _cli(capsys, "predict", "--model", str(champion_dir), "--out",
                        str(tmp_path / "bare"), *images)
    assert code == 0 and model_hash(champion_dir)[:12] in out
    # ... the champion is checked against the hash its registry version recorded.
    code, _, err = _cli(capsys, "predict", "--model", uri, "--repo", str(line.workspace),
                        "--out", str(tmp_path / "refused"), *images)
    assert code == 2 and not (tmp_path / "refused").exists()
    assert f"is not exdd-{LINE} v{version}, recorded as {recorded[:12]}" in err
    run = open_run(line.params_file, LINE, "tampered")
    with pytest.raises(ModelError, match="refusing to load it"):
        score_images(run, [Path(p) for p in images])
    assert not run.scores_dir.exists()

    ws = Workspace(line.workspace)
    ws.restore(f"{params.publish.champion_dir}.dvc", params.publish.dvc_remote)
    assert model_hash(champion_dir) == recorded
    assert score_images(run, [Path(p) for p in images]).model_version == version

    # A version's registry copy is checked the same way.
    registry = Registry(params, line.workspace)
    v1 = next(v for v in registry.versions() if int(v.version) == 1)
    by_version = f"models:/exdd-{LINE}/1"
    code, out, err = _cli(capsys, "predict", "--model", by_version, "--repo",
                          str(line.workspace), "--out", str(tmp_path / "v1"), *images)
    assert code == 0 and "version 1" in out, err
    stored = registry.client.get_model_version_download_uri(registry.name, "1")
    stored_dir = Path(stored.removeprefix("file://")) / "artifacts" / "model_dir"
    assert model_hash(stored_dir) == v1.tags[TAG_HASH]
    _tamper(stored_dir)
    code, _, err = _cli(capsys, "predict", "--model", by_version, "--repo",
                        str(line.workspace), "--out", str(tmp_path / "v1-bad"), *images)
    assert code == 2 and f"is not exdd-{LINE} v1" in err


def test_models_needs_a_workspace_and_creates_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "no" / "such" / "dir"
    code, out, err = _cli(capsys, "models", "--repo", str(missing))
    assert code == 2 and f"{missing}: no such line workspace" in err and not out
    assert not (tmp_path / "no").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    code, out, err = _cli(capsys, "models", "--repo", str(empty))  # no params: not defaults
    assert code == 2 and f"{empty}: not a line workspace (no params.yaml)" in err and not out
    assert list(empty.iterdir()) == []
    (empty / "params.yaml").write_text("{}\n")  # a workspace at exdd's defaults, no registry
    code, out, _ = _cli(capsys, "models", "--repo", str(empty))
    assert code == 0 and "no model registered for line demo yet" in out
    assert [p.name for p in empty.iterdir()] == ["params.yaml"]
    image = tmp_path / "part.png"
    Image.fromarray(np.full((32, 32), 128, np.uint8)).save(image)
    code, _, err = _cli(capsys, "predict", "--model", "models:/exdd-demo@champion", "--repo",
                        str(empty), "--out", str(tmp_path / "p"), str(image))
    assert code == 2 and "no model registry in" in err
    assert [p.name for p in empty.iterdir()] == ["params.yaml"]
