"""``exdd data ksdd2`` / ``exdd data demo`` through the real command line."""

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
from test_ksdd2_download import ksdd2_zip, server  # noqa: F401 (fixture)

from exdd.cli import main
from exdd.data.readers import load_samples

SMALL_DEMO = """\
demo:
  height: 48
  width: 32
  train_normal: 3
  train_defect: 1
  test_normal: 2
  test_defect: 2
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(SMALL_DEMO)
    return path


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(root.rglob("*.png")):
        h.update(f.relative_to(root).as_posix().encode() + f.read_bytes())
    return h.hexdigest()


def test_demo_uses_config_and_seed(tmp_path: Path, config: Path, capsys) -> None:
    runs = {}
    for name, seed in (("a", "3"), ("b", "3"), ("c", "4")):
        out = tmp_path / name
        assert main(["data", "demo", "--out", str(out), "--seed", seed,
                     "--params", str(config)]) == 0
        runs[name] = _digest(out)
    samples = load_samples(tmp_path / "a")
    assert sum(s.split == "train" for s in samples) == 4
    assert [s.label for s in samples if s.split == "test"].count(1) == 2
    assert runs["a"] == runs["b"] != runs["c"]
    assert "seed 3" in capsys.readouterr().out


def test_demo_refuses_a_foreign_folder(tmp_path: Path, config: Path, capsys) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    assert main(["data", "demo", "--out", str(tmp_path), "--params", str(config)]) == 2
    assert "refusing to replace" in capsys.readouterr().err
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_ksdd2_command(server, tmp_path: Path, capsys) -> None:  # noqa: F811
    body = ksdd2_zip()
    server.files["/KolektorSDD2.zip"] = body
    url = server.url + "/KolektorSDD2.zip"
    out = tmp_path / "ksdd2"
    assert main(["data", "ksdd2", "--out", str(out), "--url", url, "--sha256", "0" * 64]) == 2
    assert "checksum mismatch" in capsys.readouterr().err and not out.exists()
    sha = hashlib.sha256(body).hexdigest()
    assert main(["data", "ksdd2", "--out", str(out), "--url", url, "--sha256", sha]) == 0
    assert "train 2 images (1 defective), test 2 images (1 defective)" in capsys.readouterr().out


def test_python_dash_m_entry_point(tmp_path: Path, config: Path) -> None:
    out = tmp_path / "demo"
    done = subprocess.run([sys.executable, "-m", "exdd", "data", "demo", "--out", str(out),
                           "--params", str(config)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"written to {out}" in done.stdout
    assert len(load_samples(out, "test")) == 4
