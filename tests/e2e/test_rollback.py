"""Rollback on a real line workspace with a real S3 remote on loopback: v1 and v2 are
published, then v1 is restored bit for bit, from the DVC cache or, without it, from S3."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil

import numpy as np
import pytest
import yaml
from mlops_helpers import (
    fit_candidate, make_line, probe_bytes, stored_probe_bytes, training_set, tree_digest,
)

from exdd.cli import main as exdd_main
from exdd.errors import ConfigError, ModelError
from exdd.line.gate import run_gate
from exdd.detector.modelio import model_hash
from exdd.line.publish import PROBE_FILE, publish
from exdd.line.registry import CHAMPION, Registry
from exdd.line.rollback import rollback
from exdd.line.workspace import Workspace

BUCKET = "exdd-rollback"


@pytest.fixture(scope="module")
def line(s3_server, tmp_path_factory: pytest.TempPathFactory):
    """v1 then v2 published; what the champion folder held right after each publish."""
    s3_server.create_bucket(BUCKET)
    env = s3_server.env()
    with pytest.MonkeyPatch.context() as mp:
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
            mp.setenv(key, env[key])
        root = tmp_path_factory.mktemp("rollback")
        repo, params = make_line(root, f"s3://{BUCKET}/demo",
                                 {"publish": {"s3_endpoint_url": s3_server.endpoint_url}})
        train = training_set(root, params)
        champion = repo / params.publish.champion_dir
        at_publish = {}
        for version in (1, 2):
            model = fit_candidate(params, train, root / f"cand{version}", seed=version)
            assert run_gate(model, repo / params.gate.benchmark, params, repo).passed
            assert publish(model, params, repo).version == version
            at_publish[version] = tree_digest(champion)
        yield repo, params, at_publish


def _audit(repo, params) -> list[dict]:
    return [json.loads(x) for x in (repo / params.publish.audit_log).read_text().splitlines()]


def test_rollback_to_v1_is_bit_for_bit(line, tmp_path) -> None:
    repo, params, at_publish = line
    champion = repo / params.publish.champion_dir

    done = rollback("model-demo-v1", params, repo, "v2 flags too many good parts", "alice")

    assert (done.tag, done.version) == ("model-demo-v1", 1)
    assert tree_digest(champion) == at_publish[1]  # banks, projection, metadata, probe
    assert model_hash(champion) == done.model_hash
    assert int(Registry(params, repo).alias(CHAMPION).version) == 1
    ws = Workspace(repo)
    assert (repo / "models/champion.dvc").read_text() == ws.show("model-demo-v1",
                                                                "models/champion.dvc")
    assert "v2 flags too many good parts" in ws.git("log", "-1", "--format=%B")
    entry = _audit(repo, params)[-1]
    assert (entry["event"], entry["who"], entry["from_version"], entry["version"]) == (
        "rollback", "alice", 2, 1)
    assert entry["reason"] == "v2 flags too many good parts"

    # The champion's scores are those v1 gave when it was published, to the bit:
    # through the library and through `exdd predict`.
    probe = json.loads((champion / PROBE_FILE).read_text())
    assert probe_bytes(champion, probe, repo) == stored_probe_bytes(probe)
    images = [str(repo / item["path"]) for item in probe["images"]]
    out = tmp_path / "predict"
    assert exdd_main(["predict", "--model", str(champion), "--out", str(out), *images]) == 0
    with open(out / "scores.csv", newline="") as f:
        scores = np.array([float(row["score"]) for row in csv.DictReader(f)], dtype="<f8")
    assert scores.tobytes() == stored_probe_bytes(probe)


def test_tampered_cache_is_refused_and_nothing_changes(line) -> None:
    repo, params, _ = line
    ws = Workspace(repo)
    head, champion_files = ws.head(), tree_digest(repo / params.publish.champion_dir)
    # Flip one byte of v2's normal bank in the DVC cache.
    dvc_file = yaml.safe_load(ws.show("model-demo-v2", "models/champion.dvc"))
    manifest_md5 = dvc_file["outs"][0]["md5"]
    cache = repo / ".dvc/cache/files/md5"
    manifest = json.loads((cache / manifest_md5[:2] / manifest_md5[2:]).read_text())
    bank = next(e["md5"] for e in manifest if e["relpath"] == "bank_normal.npy")
    obj = cache / bank[:2] / bank[2:]
    os.chmod(obj, 0o644)
    data = bytearray(obj.read_bytes())
    data[-1] ^= 0xFF
    obj.write_bytes(bytes(data))

    with pytest.raises(ModelError, match="bank_normal.npy: sha256 does not match"):
        rollback("v2", params, repo, "try v2 again", "bob")

    assert ws.head() == head
    assert tree_digest(repo / params.publish.champion_dir) == champion_files
    assert int(Registry(params, repo).alias(CHAMPION).version) == 1
    assert _audit(repo, params)[-1]["who"] == "alice"  # no entry for the refused rollback
    obj.unlink()  # drop the bad object: the next restore must fetch it again


def test_missing_cache_is_pulled_from_the_s3_remote(line) -> None:
    repo, params, at_publish = line
    shutil.rmtree(repo / ".dvc/cache")

    done = rollback("2", params, repo, "v1 regression confirmed fixed", "carol")

    assert done.version == 2
    assert tree_digest(repo / params.publish.champion_dir) == at_publish[2]
    assert any((repo / ".dvc/cache").rglob("*.dir"))  # the cache holds the pulled files
    assert int(Registry(params, repo).alias(CHAMPION).version) == 2


def test_cli_rollback_and_its_errors(line, capsys: pytest.CaptureFixture[str]) -> None:
    repo, params, at_publish = line
    assert exdd_main(["rollback", "--to", "v1", "--reason", "night shift request",
                      "--who", "dave", "--repo", str(repo)]) == 0
    assert "model-demo-v1" in capsys.readouterr().out
    assert tree_digest(repo / params.publish.champion_dir) == at_publish[1]
    assert _audit(repo, params)[-1]["who"] == "dave"
    lines_before = len(_audit(repo, params))

    with pytest.raises(ConfigError, match="no published version 'v9'.*model-demo-v1"):
        rollback("v9", params, repo, "typo", "erin")
    with pytest.raises(ConfigError, match="needs a reason"):
        rollback("v2", params, repo, "  ", "erin")
    assert exdd_main(["rollback", "--to", "v7", "--reason", "x", "--repo", str(repo)]) == 2
    assert "no published version" in capsys.readouterr().err
    assert len(_audit(repo, params)) == lines_before


def test_audit_log_is_only_appended(line) -> None:
    repo, params, _ = line
    log = (repo / params.publish.audit_log).read_bytes()
    entries = [json.loads(x) for x in log.decode().splitlines()]
    assert [e["event"] for e in entries] == ["publish", "publish", "rollback", "rollback",
                                             "rollback"]
    digest = hashlib.sha256(log).hexdigest()
    rollback("v2", params, repo, "end of test", "frank")
    grown = (repo / params.publish.audit_log).read_bytes()
    assert hashlib.sha256(grown[:len(log)]).hexdigest() == digest
    assert json.loads(grown[len(log):])["who"] == "frank"
