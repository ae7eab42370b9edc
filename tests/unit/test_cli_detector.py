"""``exdd fit / evaluate / predict`` as users run them, including their bad-input errors."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from exdd.cli import main
from exdd.data.readers import load_samples

SMALL = {"data": {"image_height": 64, "image_width": 64},
         "model": {"runtime": {"batch_size": 4}, "coreset": {"normal": 0.1, "defect": 0.5}}}


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, small_demo: Path) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("cli")
    data = small_demo  # conftest.py: one demo data set for the session
    cfg = root / "params.yaml"
    cfg.write_text(yaml.safe_dump(SMALL))
    return data, cfg


@pytest.fixture(scope="module")
def model_dir(setup: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    data, cfg = setup
    out = tmp_path_factory.mktemp("m") / "model"
    assert main(["fit", "--data", str(data), "--out", str(out), "--params", str(cfg)]) == 0
    return out


def test_fit_evaluate_predict(setup: tuple[Path, Path], model_dir: Path, tmp_path: Path) -> None:
    data, _ = setup
    out_json = tmp_path / "metrics.json"
    assert main(["evaluate", "--model", str(model_dir), "--data", str(data),
                 "--json", str(out_json), "--plots", str(tmp_path / "plots")]) == 0
    metrics = json.loads(out_json.read_text())
    for key in ("image_auroc", "pixel_auroc", "aupro", "image_ap", "f1_max", "n_test"):
        assert key in metrics
    n_test = len(load_samples(data, "test"))
    assert metrics["n_test"] == n_test
    assert (model_dir / "metrics.json").exists()
    assert (tmp_path / "plots" / "roc_pr.png").stat().st_size > 0

    pred_dir = tmp_path / "pred"
    assert main(["predict", "--model", str(model_dir), "--out", str(pred_dir),
                 str(data / "test")]) == 0
    rows = list(csv.DictReader((pred_dir / "scores.csv").open()))
    assert len(rows) == n_test
    assert {r["flag"] for r in rows} <= {"0", "1"}
    flagged = [float(r["score"]) >= metrics["threshold"] for r in rows]
    assert [bool(int(r["flag"])) for r in rows] == flagged
    overlay = Image.open(pred_dir / rows[0]["overlay"])
    # the model runs at 64 x 64; the overlay keeps the image's own shape
    assert overlay.size == Image.open(rows[0]["image"]).size != (64, 64)
    assert np.asarray(overlay).std() > 0


def test_single_bank_and_module_entry_point(setup: tuple[Path, Path], tmp_path: Path) -> None:
    data, cfg = setup
    out = tmp_path / "pc"
    proc = subprocess.run(
        [sys.executable, "-m", "exdd", "fit", "--data", str(data), "--out", str(out),
         "--params", str(cfg), "--single-bank"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    meta = json.loads((out / "model.json").read_text())
    assert meta["model"]["single_bank"] is True and meta["bank_sizes"]["defect"] == 0


def _error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(argv) == 2
    # progress bars may have drawn on stderr; the error itself is one line
    lines = [ln for ln in capsys.readouterr().err.replace("\r", "\n").splitlines()
             if "error:" in ln]
    assert len(lines) == 1
    return lines[0]


def test_bad_inputs_give_one_line_errors_and_write_nothing(
        setup: tuple[Path, Path], model_dir: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    data, cfg = setup
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    out = tmp_path / "never"
    assert "broken.png: unreadable image" in _error(
        ["predict", "--model", str(model_dir), "--out", str(out), str(broken)], capsys)
    assert not out.exists()

    bad_cfg = tmp_path / "bad.yaml"
    bad_cfg.write_text("model:\n  features:\n    backbone: resnet9000\n")
    assert "model.features.backbone" in _error(
        ["fit", "--data", str(data), "--out", str(out), "--params", str(bad_cfg)], capsys)

    empty = tmp_path / "empty.csv"
    empty.write_text("image,mask,label,split\n")
    assert "manifest has no rows" in _error(["fit", "--data", str(empty), "--out", str(out)],
                                            capsys)
    assert "does not exist" in _error(
        ["evaluate", "--model", str(model_dir), "--data", str(tmp_path / "nope")], capsys)
    assert not out.exists()
    # a model directory must not be half-replaced by a failing fit
    before = (model_dir / "checksums.json").read_bytes()
    no_mask = tmp_path / "nomask.csv"
    no_mask.write_text(f"image,mask,label,split\n{data}/train/00000.png,,defect,train\n")
    assert "has no mask" in _error(["fit", "--data", str(no_mask), "--out", str(model_dir),
                                    "--params", str(cfg)], capsys)
    assert (model_dir / "checksums.json").read_bytes() == before


def test_predict_scores_the_rest_when_one_image_is_unreadable(
        setup: tuple[Path, Path], model_dir: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    data, _ = setup
    folder = tmp_path / "night"
    folder.mkdir()
    good = sorted(p for p in (data / "test").glob("*.png") if not p.stem.endswith("_GT"))[:3]
    for p in good:
        (folder / p.name).write_bytes(p.read_bytes())
    (folder / "zz-truncated.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    out = tmp_path / "pred"
    assert main(["predict", "--model", str(model_dir), "--out", str(out), str(folder)]) == 1
    captured = capsys.readouterr()
    assert "3 of 4 image(s) scored" in captured.out
    assert f"not scored: {folder / 'zz-truncated.png'}: unreadable image" in captured.err
    rows = list(csv.DictReader((out / "scores.csv").open()))
    assert [Path(r["image"]).name for r in rows] == [p.name for p in good] + ["zz-truncated.png"]
    assert all(r["score"] and not r["error"] and r["overlay"] for r in rows[:3])
    bad = rows[3]
    assert (bad["score"], bad["flag"], bad["overlay"]) == ("", "", "")
    assert bad["error"].startswith("unreadable image")
    digest = hashlib.sha256((model_dir / "checksums.json").read_bytes()).hexdigest()
    assert {r["model_version"] for r in rows} == {digest[:12]}  # a bare directory: its hash


def _mount_tmpfs(where: Path, options: str) -> bool:
    where.mkdir()
    return subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)],
                          capture_output=True).returncode == 0


@pytest.fixture
def tiny_disk(tmp_path: Path):
    """A real 64 KiB tmpfs: too small for a model (mounting needs root)."""
    disk = tmp_path / "tiny"
    if not _mount_tmpfs(disk, "size=64k"):
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield disk
    subprocess.run(["umount", str(disk)], check=True)


@pytest.fixture
def read_only_dir(tmp_path: Path):
    """A read-only tmpfs where mounting is allowed, else a folder without write permission."""
    where = tmp_path / "ro"
    if _mount_tmpfs(where, "ro,size=64k"):
        yield where
        subprocess.run(["umount", str(where)], check=True)
        return
    if os.geteuid() == 0:
        pytest.skip("root ignores folder permissions and cannot mount a read-only tmpfs")
    where.chmod(0o555)
    yield where
    where.chmod(0o755)


def test_fit_on_a_full_disk_is_one_line_and_leaves_nothing(
        setup: tuple[Path, Path], tiny_disk: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data, cfg = setup
    out = tiny_disk / "model"
    line = _error(["fit", "--data", str(data), "--out", str(out), "--params", str(cfg)], capsys)
    assert line == f"exdd fit: error: {out}: cannot write (No space left on device)"
    assert list(tiny_disk.iterdir()) == []  # no staging folder, no half model


def test_writes_into_a_read_only_folder_are_one_line(
        setup: tuple[Path, Path], model_dir: Path, read_only_dir: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    data, cfg = setup
    out = read_only_dir / "model"
    line = _error(["fit", "--data", str(data), "--out", str(out), "--params", str(cfg)], capsys)
    assert line.startswith(f"exdd fit: error: {out}: cannot write (")
    pred = read_only_dir / "pred"
    line = _error(["predict", "--model", str(model_dir), "--out", str(pred), str(data / "test")],
                  capsys)
    assert line.startswith(f"exdd predict: error: {pred}: cannot write (")
    json_out = read_only_dir / "metrics.json"
    line = _error(["evaluate", "--model", str(model_dir), "--data", str(data),
                   "--json", str(json_out)], capsys)
    assert line.startswith(f"exdd evaluate: error: {json_out}: cannot write (")
    assert list(read_only_dir.iterdir()) == []


def test_garbage_weights_file_is_one_line_without_torch_advice(
        setup: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data, _ = setup
    weights = tmp_path / "weights.pth"
    weights.write_bytes(b"this is not a checkpoint\n" * 40)
    cfg = tmp_path / "params.yaml"
    cfg.write_text(yaml.safe_dump({**SMALL, "model": {
        **SMALL["model"], "features": {"backbone_weights": str(weights)}}}))
    line = _error(["fit", "--data", str(data), "--out", str(tmp_path / "m"), "--params",
                   str(cfg)], capsys)
    assert f"{weights}: cannot read backbone weights" in line
    assert "weights_only" not in line and "re-run" not in line.lower()


def test_fit_with_synthetic_defects_says_whether_m_p_keeps_them(
        setup: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data, cfg = setup
    synthetic = tmp_path / "synthetic"
    assert main(["synthesize", "--data", str(data), "--out", str(synthetic), "--backend",
                 "procedural", "--count", "6", "--params", str(cfg)]) == 0
    capsys.readouterr()
    assert main(["fit", "--data", str(data), "--synthetic", str(synthetic), "--out",
                 str(tmp_path / "m"), "--params", str(cfg)]) == 0
    said = capsys.readouterr().out.splitlines()[-1]
    kept = json.loads((tmp_path / "m" / "model.json").read_text())["selection"]["synthetic"]["kept"]
    assert said.endswith("; M_P keeps the synthetic defects" if kept
                         else "; M_P leaves the synthetic defects out")


def test_fit_says_which_scoring_it_chose(setup: tuple[Path, Path], tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    data, cfg = setup
    assert main(["fit", "--data", str(data), "--out", str(tmp_path / "m"), "--params",
                 str(cfg)]) == 0
    written, said = capsys.readouterr().out.splitlines()[-2:]
    chosen = json.loads((tmp_path / "m" / "model.json").read_text())["selection"]
    assert said.startswith("scoring chosen on 2 normal and 4 defect training images held out: "
                           f"map {chosen['rule']}, image score ")
    assert said.endswith(chosen["rule"] if chosen["image_rule"] == "same" else chosen["image_rule"])
    assert "feature padding inside, image pooling top_k" in written  # validated dual rules
    assert main(["fit", "--data", str(data), "--out", str(tmp_path / "s"), "--params",
                 str(cfg), "--single-bank"]) == 0
    assert "feature padding zeros, image pooling max" in capsys.readouterr().out  # PatchCore's
