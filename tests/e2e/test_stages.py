"""The pipeline's one stage definition (exdd.line.stages): the dvc.yaml it generates, the
paths the nightly steps write, and the drift check (the dvc repro run: test_dvc_pipeline)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from exdd.cli import build_parser
from exdd.errors import ConfigError
from exdd.line.intake.manifest import MANIFEST_NAME
from exdd.line.stages import (
    CANDIDATE_DIR, DATASET, INTAKE_REPORTS, MANIFEST, METRICS_REPORT, MODEL_FILES, STAGES,
    SYNTHETIC_DIR, check_dvc_yaml, dvc_yaml_text, stage,
)
from exdd.line.workspace import Workspace, sync_stages

REPO = Path(__file__).resolve().parents[2]


def test_the_shipped_dvc_yaml_is_the_generated_one() -> None:
    assert (REPO / "dvc.yaml").read_text() == dvc_yaml_text()


def test_dvc_yaml_declares_every_stage_with_its_command_deps_and_outs() -> None:
    declared = yaml.safe_load(dvc_yaml_text())["stages"]
    assert list(declared) == [s.name for s in STAGES]
    for s in STAGES:
        assert declared[s.name]["cmd"] == s.cmd
        assert declared[s.name]["deps"] == list(s.deps)


def test_the_stages_outs_are_the_paths_the_nightly_steps_write() -> None:
    assert stage("validate").paths("outs") == (DATASET, INTAKE_REPORTS)
    assert stage("synthesize").paths("outs") == (SYNTHETIC_DIR,)
    assert stage("fit").paths("outs") == MODEL_FILES
    assert all(Path(p).parent == Path(CANDIDATE_DIR) for p in MODEL_FILES)
    assert stage("evaluate").paths("metrics") == (METRICS_REPORT,)
    assert MANIFEST == f"{DATASET}/{MANIFEST_NAME}"


def test_every_stage_command_is_a_valid_exdd_command_line() -> None:
    parser = build_parser()
    for s in STAGES:
        program, *argv = s.cmd.split()
        assert program == "exdd"
        parser.parse_args(argv)  # exits (SystemExit) on an unknown option


def test_an_edited_dvc_yaml_is_refused_until_synced(tmp_path: Path) -> None:
    ws = Workspace(tmp_path)
    ws.git("init", "-q")
    (tmp_path / "dvc.yaml").write_text(dvc_yaml_text().replace("--reports", "--report"))
    ws.commit("old workspace", ["dvc.yaml"])
    with pytest.raises(ConfigError, match=r"dvc\.yaml: not the pipeline's stage definition"):
        check_dvc_yaml(tmp_path)
    assert sync_stages(tmp_path) is True
    check_dvc_yaml(tmp_path)
    assert ws.git("status", "--porcelain") == ""
    assert sync_stages(tmp_path) is False
