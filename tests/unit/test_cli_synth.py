"""``exdd synthesize`` end to end through the real command-line entry point."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from exdd.cli import main
from exdd.config import DemoConfig
from exdd.data.readers import load_samples
from exdd.data.demo import make_demo
from exdd.data.synth import read_provenance


@pytest.fixture(scope="module")
def demo(small_demo: Path) -> Path:
    return small_demo  # conftest.py: one demo data set for the session


def test_synthesize_writes_count_samples_with_provenance(demo: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "syn"
    rc = main(["synthesize", "--data", str(demo), "--out", str(out), "--backend", "procedural",
               "--count", "4", "--seed", "9"])
    assert rc == 0
    assert "4 synthetic defect(s) (procedural)" in capsys.readouterr().out
    assert len(load_samples(out)) == 4
    assert len({r.seed for r in read_provenance(out)}) == 4


def test_config_file_sets_the_defaults(demo: Path, tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"synth": {"count": 3, "seed": 1,
                                                "procedural": {"kinds": ["scratch"]}}}))
    out = tmp_path / "syn"
    assert main(["synthesize", "--data", str(demo), "--out", str(out),
                 "--params", str(params)]) == 0
    records = read_provenance(out)
    assert len(records) == 3 and all(r.detail["kinds"][0] == "scratch" for r in records)


def test_bad_input_exits_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    clean = make_demo(tmp_path / "clean", DemoConfig(height=32, width=32, train_normal=2,
                                                      train_defect=0, test_normal=1, test_defect=1))
    rc = main(["synthesize", "--data", str(clean), "--out", str(tmp_path / "syn"),
               "--backend", "sdxl", "--count", "2"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert "no ground-truth defect masks" in err[0] and str(clean) in err[0]
    assert not (tmp_path / "syn").exists()
    rc = main(["synthesize", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "syn")])
    assert rc == 2 and "does not exist" in capsys.readouterr().err
