"""Publishing on a real line workspace whose DVC remote is a real S3 server on loopback.

The tests run in order on one line: v1, v2, a v3 the gate turns down, a publish during an
S3 outage, a publish interrupted after its registry step, one with the registry down, the
champion loaded as an MLflow pyfunc in a fresh process, and ``exdd models``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import yaml
from mlops_helpers import (
    fit_candidate, fit_mislabelled, make_line, stored_probe_bytes, training_set,
)

from exdd.cli import main as exdd_main
from exdd.errors import ExddError, ModelError
from exdd.line.gate import run_gate
from exdd.detector.modelio import model_hash
from exdd.line.publish import PROBE_FILE, publish, published_versions
from exdd.line.registry import CHAMPION, REJECTED, Registry, tracking_uri
from exdd.line.workspace import Workspace

BUCKET = "exdd-models"


@pytest.fixture(scope="module")
def line(s3_server, tmp_path_factory: pytest.TempPathFactory):
    """Workspace with remote s3://BUCKET/demo; the endpoint comes from params, the
    credentials only from the environment."""
    s3_server.create_bucket(BUCKET)
    env = s3_server.env()
    with pytest.MonkeyPatch.context() as mp:
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
            mp.setenv(key, env[key])
        mp.delenv("AWS_ENDPOINT_URL", raising=False)
        root = tmp_path_factory.mktemp("publish")
        repo, params = make_line(root, f"s3://{BUCKET}/demo",
                                 {"publish": {"s3_endpoint_url": s3_server.endpoint_url}})
        train = training_set(root, params)
        models = {f"v{i}": fit_candidate(params, train, root / f"cand{i}", seed=i)
                  for i in (1, 2, 4, 5)}
        models["bad"] = fit_mislabelled(params, train, root / "bad")
        yield repo, params, models


def _gate_and_publish(line, name: str):
    repo, params, models = line
    assert run_gate(models[name], repo / params.gate.benchmark, params, repo).passed
    return publish(models[name], params, repo)


def _remote_keys(s3_server) -> set[str]:
    listing = s3_server.client().list_objects_v2(Bucket=BUCKET)
    return {obj["Key"] for obj in listing.get("Contents", [])}


def _state(line) -> dict:
    """The champion as every system sees it."""
    repo, params, _ = line
    ws = Workspace(repo)
    champion = Registry(params, repo).alias(CHAMPION)
    return {
        "alias": int(champion.version) if champion else None,
        "head": ws.head(),
        "dvc_file": (repo / f"{params.publish.champion_dir}.dvc").read_text(),
        "files": model_hash(repo / params.publish.champion_dir),
        "tags": [t.name for t in ws.tags("model-*")],
    }


def test_publish_v1(line, s3_server) -> None:
    repo, params, models = line
    done = _gate_and_publish(line, "v1")

    assert (done.tag, done.version) == ("model-demo-v1", 1)
    assert done.model_hash == model_hash(models["v1"])
    assert model_hash(repo / params.publish.champion_dir) == done.model_hash
    champion = Registry(params, repo).alias(CHAMPION)
    assert int(champion.version) == 1 and champion.tags["git_tag"] == done.tag
    # The annotated tag records the metrics and the data hashes.
    [(record, info)] = published_versions(Workspace(repo), "demo")
    assert record == done
    meta = json.loads((models["v1"] / "model.json").read_text())
    assert info["data_hashes"] == meta["data_hashes"]
    assert info["metrics"]["image_auroc"] >= params.gate.min_image_auroc
    # Every file of the champion folder is on the S3 remote.
    dir_md5 = yaml.safe_load((repo / "models/champion.dvc").read_text())["outs"][0]["md5"]
    keys = _remote_keys(s3_server)
    assert f"demo/files/md5/{dir_md5[:2]}/{dir_md5[2:]}" in keys
    assert len(keys) >= 8
    # Nothing of the remote's credentials went into a tracked file.
    tracked = Workspace(repo).git("ls-files").splitlines()
    secret = s3_server.env()["AWS_SECRET_ACCESS_KEY"]
    assert not any(secret in (repo / f).read_text(errors="ignore") for f in tracked)


def test_publishing_the_same_model_again_changes_nothing(line) -> None:
    repo, params, models = line
    before = _state(line)
    again = publish(models["v1"], params, repo)
    assert again.tag == "model-demo-v1"
    assert _state(line) == before
    assert len(Registry(params, repo).versions()) == 1


def test_publish_v2(line) -> None:
    repo, params, _ = line
    done = _gate_and_publish(line, "v2")
    assert (done.tag, done.version) == ("model-demo-v2", 2)
    state = _state(line)
    assert state["alias"] == 2 and state["tags"] == ["model-demo-v1", "model-demo-v2"]
    assert state["files"] == done.model_hash
    log = [json.loads(x) for x in (repo / params.publish.audit_log).read_text().splitlines()]
    assert [(e["event"], e["tag"]) for e in log] == [("publish", "model-demo-v1"),
                                                      ("publish", "model-demo-v2")]


def test_v3_failing_the_gate_leaves_the_champion(line) -> None:
    repo, params, models = line
    before = _state(line)
    decision = run_gate(models["bad"], repo / params.gate.benchmark, params, repo)
    assert not decision.passed and decision.rejected_version == 3
    with pytest.raises(ModelError):
        publish(models["bad"], params, repo)
    assert _state(line) == before
    assert int(Registry(params, repo).alias(REJECTED).version) == 3


def test_s3_outage_during_publish_then_rerun(line, s3_server) -> None:
    repo, params, models = line
    assert run_gate(models["v4"], repo / params.gate.benchmark, params, repo).passed
    before = _state(line)
    s3_server.stop()
    try:
        with pytest.raises(ExddError, match="dvc push failed"):
            publish(models["v4"], params, repo)
        assert _state(line) == before  # no new champion anywhere, no tag, no version
        assert len(Registry(params, repo).versions()) == 3
        assert "models/champion" not in Workspace(repo).git("status", "--porcelain")
    finally:
        s3_server.start()

    done = publish(models["v4"], params, repo)
    assert (done.tag, done.version) == ("model-demo-v4", 4)
    assert _state(line)["alias"] == 4


def test_failure_after_registering_is_undone_and_rerun_reuses_the_version(line) -> None:
    repo, params, models = line
    ws = Workspace(repo)
    assert run_gate(models["v5"], repo / params.gate.benchmark, params, repo).passed
    before = _state(line)
    # Someone made the tag publishing will want by hand: the tag step fails after the
    # registry step (version 5 exists, alias untouched).
    ws.git("tag", "model-demo-v5")
    with pytest.raises(ExddError, match="git tag"):
        publish(models["v5"], params, repo)
    ws.git("tag", "-d", "model-demo-v5")
    assert _state(line) == before
    versions = Registry(params, repo).versions()
    assert [int(v.version) for v in versions][-1] == 5  # registered, not champion

    done = publish(models["v5"], params, repo)
    assert (done.tag, done.version) == ("model-demo-v5", 5)
    assert len(Registry(params, repo).versions()) == 5


def test_registry_down_leaves_the_champion_and_names_no_credentials(
        line, monkeypatch: pytest.MonkeyPatch) -> None:
    repo, params, models = line
    before = _state(line)
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    down = params.model_copy(deep=True)
    # the password comes from the environment (a written one is refused by the config)
    monkeypatch.setenv("EXDD_TEST_REGISTRY_PASSWORD", "registry-secret")
    down.publish.tracking_uri = f"http://exdd:${{EXDD_TEST_REGISTRY_PASSWORD}}@127.0.0.1:{port}"
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with pytest.raises(ExddError, match=r"MLflow at http://\*\*\*@127\.0\.0\.1") as err:
        publish(models["v5"], down, repo)
    assert "registry-secret" not in str(err.value)
    assert _state(line) == before


def test_champion_loads_as_pyfunc_in_a_fresh_process(line) -> None:
    """The registered pyfunc takes image bytes (never a server path) and gives the probe
    scores the version was published with."""
    repo, params, _ = line
    probe = json.loads((repo / params.publish.champion_dir / PROBE_FILE).read_text())
    images = [str(repo / item["path"]) for item in probe["images"]]
    code = (
        "import sys, mlflow, numpy as np, pandas as pd\n"
        "mlflow.set_tracking_uri(sys.argv[1])\n"
        "m = mlflow.pyfunc.load_model('models:/exdd-demo@champion')\n"
        "blobs = [open(p, 'rb').read() for p in sys.argv[2:]]\n"
        "out = m.predict(pd.DataFrame({'image': blobs}))\n"
        "assert list(out.columns) == ['score', 'flagged', 'threshold'], out.columns\n"
        "sys.stdout.write(np.asarray(out['score'], '<f8').tobytes().hex())\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, tracking_uri(params.publish, repo),
                           *images], capture_output=True, text=True, cwd="/", check=False,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert bytes.fromhex(proc.stdout) == stored_probe_bytes(probe)


def test_models_lists_versions_gate_and_champion(line, capsys: pytest.CaptureFixture[str]
                                                  ) -> None:
    repo, _, _ = line
    assert exdd_main(["models", "--repo", str(repo)]) == 0
    out = capsys.readouterr().out
    assert "champion" in out and "rejected" in out and "failed" in out
    for version in (1, 2, 4, 5):
        assert f"model-demo-v{version}" in out
