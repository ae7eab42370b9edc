"""``exdd serve`` as a real process on loopback, spoken to over real HTTP.

The tests run in order on one line: the service starts before any model exists, follows
the first publishes, scores as ``exdd predict`` does, refuses every kind of bad input
without a trace or a path, checks bearer tokens, and follows a rollback made while a client
streams requests. The same champion is then served by ``mlflow models serve``.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from mlops_helpers import fit_candidate, make_line, training_set
from PIL import Image
from serve_helpers import (
    READY_TIMEOUT_S, ServeProcess, encoded, free_port, predict_scores, write_lines_file,
)

import exdd
from exdd.line.gate import run_gate
from exdd.detector.modelio import model_hash
from exdd.line.publish import publish
from exdd.line.registry import tracking_uri
from exdd.line.rollback import rollback

SERVE = {"poll_interval_s": 0.5, "max_body_bytes": 200_000, "max_images": 4,
         "max_pixels": 1_000_000}
TOKEN = "line-7-secret-token"


@pytest.fixture(scope="module")
def line(tmp_path_factory: pytest.TempPathFactory):
    """A line workspace (local DVC remote), two gated-to-be candidates, the lines file."""
    root = tmp_path_factory.mktemp("serve")
    repo, params = make_line(root, str(root / "remote"))
    train = training_set(root, params)
    models = {v: fit_candidate(params, train, root / f"cand{v}", seed=v) for v in (1, 2)}
    return root, repo, params, models, write_lines_file(root, repo, SERVE)


@pytest.fixture(scope="module")
def server(line):
    root, *_, lines_file = line
    proc = ServeProcess(lines_file, root / "serve.log")
    try:
        proc.wait("/health")
        yield proc
    finally:
        proc.stop()


def _benchmark_images(repo: Path, params, count: int) -> list[Path]:
    found = sorted(p for p in (repo / params.gate.benchmark / "test").glob("*.png")
                   if not p.stem.endswith("_GT"))
    return found[:count]


def _publish(line, version: int) -> None:
    _, repo, params, models, _ = line
    assert run_gate(models[version], repo / params.gate.benchmark, params, repo).passed
    assert publish(models[version], params, repo).version == version


def _assert_clean_error(response: httpx.Response, status: int, fragment: str,
                        repo: Path) -> None:
    """A JSON error with a one-line message: no traceback, no server path."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    message = response.json()["error"]
    assert fragment in message and "\n" not in message
    for leak in ("Traceback", 'File "', str(repo), "/tmp", "site-packages", "exdd/"):
        assert leak not in response.text


def test_ready_only_with_a_model_then_follows_publishes(line, server) -> None:
    _, repo, params, _, _ = line
    image = _benchmark_images(repo, params, 1)[0].read_bytes()
    assert server.client.get("/health").json() == {"status": "ok"}
    _assert_clean_error(server.client.get("/ready"), 503, "no model loaded", repo)
    _assert_clean_error(server.client.post("/v1/score", content=image), 503, "no model", repo)

    _publish(line, 1)
    server.wait_version(1)
    assert server.client.post("/v1/score", content=image).json()["model_version"] == 1
    _publish(line, 2)
    server.wait_version(2)
    ready = server.client.get("/ready").json()
    assert ready["model_hash"] == model_hash(repo / params.publish.champion_dir)


def test_scores_equal_exdd_predict_in_every_format(line, server, tmp_path) -> None:
    _, repo, params, _, _ = line
    champion = repo / params.publish.champion_dir
    files = []
    for i, source in enumerate(_benchmark_images(repo, params, 3)):
        for fmt, mode in (("PNG", "L"), ("PNG", "RGB"), ("JPEG", "RGB"), ("JPEG", "L"),
                          ("BMP", "RGB"), ("BMP", "L")):
            path = tmp_path / f"{i}-{mode}.{fmt.lower()}"
            path.write_bytes(encoded(source, fmt, mode))
            files.append(path)
    expected = predict_scores(champion, files, tmp_path / "predict")
    threshold = json.loads((champion / "metrics.json").read_text())["threshold"]

    got = []
    for path in files:
        body = server.client.post("/v1/score", content=path.read_bytes()).json()
        assert (body["model_name"], body["model_version"]) == ("exdd-demo", 2)
        assert body["model_hash"] == model_hash(champion)
        assert body["threshold"] == pytest.approx(threshold)
        assert body["flagged"] == (body["score"] >= body["threshold"])
        assert body["latency_ms"] > 0
        got.append(body["score"])
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_batch_form_and_heatmap(line, server, tmp_path) -> None:
    _, repo, params, _, _ = line
    images = _benchmark_images(repo, params, 3)
    expected = predict_scores(repo / params.publish.champion_dir, images, tmp_path / "p")
    files = [("image", (p.name, p.read_bytes(), "image/png")) for p in images]

    response = server.client.post("/v1/score", files=files, params={"heatmap": "png"})

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_version"] == 2
    assert [r["image"] for r in body["results"]] == [f"part {i} ({p.name})"
                                                     for i, p in enumerate(images, start=1)]
    assert np.array([r["score"] for r in body["results"]]).tobytes() == expected.tobytes()
    for result in body["results"]:
        heat = Image.open(io.BytesIO(base64.b64decode(result["heatmap_png"])))
        assert (heat.format, heat.mode, heat.size) == ("PNG", "RGB", (64, 64))
    plain = server.client.post("/v1/score", files=files[:1]).json()["results"][0]
    assert "heatmap_png" not in plain and plain["score"] == pytest.approx(expected[0])


def test_every_bad_input_is_a_clean_4xx(line, server) -> None:
    _, repo, params, _, _ = line
    png = _benchmark_images(repo, params, 1)[0].read_bytes()
    big = io.BytesIO()
    Image.new("L", (1200, 1000)).save(big, "PNG")  # small file, too many pixels
    gif = io.BytesIO()
    Image.new("L", (64, 64)).save(gif, "GIF")
    post = server.client.post
    cases = [
        (post("/v1/score", content=b""), 400, "body: empty (zero bytes)"),
        (post("/v1/score", content=b"/etc/passwd"), 415, "body: not an image"),
        (post("/v1/score", content=b"hello, this is text" * 10), 415, "not an image"),
        (post("/v1/score", content=png[: len(png) // 2]), 400, "truncated or corrupt PNG"),
        (post("/v1/score", content=gif.getvalue()), 415, "GIF images are not accepted"),
        (post("/v1/score", content=big.getvalue()), 413, "over the limit of 1000000"),
        (post("/v1/score", content=os.urandom(SERVE["max_body_bytes"] + 1)), 413,
         "over the limit of 200000"),
        (post("/v1/score", files=[("image", ("a.png", png, "image/png"))] * 5), 413,
         "Too many files"),
        (post("/v1/score", files=[("image", ("a.png", png, "image/png")),
                                  ("image", ("../../etc/passwd", b"x", "text/plain"))]),
         415, "part 2 (passwd): not an image"),
        (post("/v1/score", content=b"--x\r\nbroken", headers={
            "content-type": "multipart/form-data; boundary=x"}), 400, "multipart body"),
        (post("/v1/score", content=png, params={"heatmap": "jpeg"}), 422, "heatmap"),
        (server.client.get("/v1/score"), 405, "Method Not Allowed"),
        (server.client.get("/etc/passwd"), 404, "Not Found"),
    ]
    for response, status, fragment in cases:
        _assert_clean_error(response, status, fragment, repo)
    assert server.client.post("/v1/score", content=png).status_code == 200  # still serving


def test_metrics_in_prometheus_format(server) -> None:
    text = server.client.get("/metrics").text
    assert "exdd_serve_model_version 2.0" in text
    assert 'exdd_serve_requests_total{path="/v1/score",status="200"}' in text
    assert 'exdd_serve_errors_total{status="415"}' in text
    assert 'exdd_serve_request_seconds_bucket{le="0.5",path="/v1/score"}' in text
    assert "exdd_serve_model_swaps_total 2.0" in text
    assert float(re.search(r"^exdd_serve_images_total (\S+)$", text, re.M).group(1)) >= 18


def test_bearer_token_auth(line) -> None:
    root, repo, params, _, _ = line
    image = _benchmark_images(repo, params, 1)[0].read_bytes()
    (root / "auth").mkdir()
    lines_file = write_lines_file(root / "auth", repo, {**SERVE, "auth": "token"})
    missing = subprocess.run(
        [sys.executable, "-m", "exdd", "serve", "--line", "demo", "--params", str(lines_file)],
        capture_output=True, text=True, env={k: v for k, v in os.environ.items()
                                             if k != "EXDD_SERVE_TOKEN"}, check=False)
    assert missing.returncode == 2
    assert "serve.auth is 'token' but $EXDD_SERVE_TOKEN is not set" in missing.stderr

    proc = ServeProcess(lines_file, root / "auth.log", {"EXDD_SERVE_TOKEN": TOKEN})
    try:
        proc.wait("/ready")
        post = proc.client.post
        _assert_clean_error(post("/v1/score", content=image), 401, "bearer token", repo)
        wrong = post("/v1/score", content=image, headers={"Authorization": "Bearer nope"})
        _assert_clean_error(wrong, 401, "bearer token", repo)
        assert wrong.headers["www-authenticate"] == "Bearer"
        right = post("/v1/score", content=image, headers={"Authorization": f"Bearer {TOKEN}"})
        assert right.status_code == 200 and right.json()["model_version"] == 2
        assert proc.client.get("/health").status_code == 200  # probes need no token
    finally:
        proc.stop()


def test_rollback_during_a_stream_of_requests(line, server, tmp_path) -> None:
    _, repo, params, models, _ = line
    image = _benchmark_images(repo, params, 1)[0]
    expected = {v: predict_scores(models[v], [image], tmp_path / f"v{v}")[0] for v in (1, 2)}
    answers: list[tuple[int, int | None, float | None]] = []
    stop = threading.Event()

    def stream() -> None:
        with httpx.Client(base_url=server.url, timeout=60.0) as client:
            while not stop.is_set():
                r = client.post("/v1/score", content=image.read_bytes())
                body = r.json() if r.status_code == 200 else {}
                answers.append((r.status_code, body.get("model_version"), body.get("score")))

    clients = [threading.Thread(target=stream) for _ in range(2)]
    for c in clients:
        c.start()
    try:
        while len(answers) < 5:
            time.sleep(0.05)
        rollback("v1", params, repo, "v2 flags good parts on the belt", "tester")
        deadline = time.monotonic() + READY_TIMEOUT_S
        while sum(1 for _, v, _ in answers if v == 1) < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        for c in clients:
            c.join()

    assert all(status == 200 for status, _, _ in answers), server.tail()
    versions = [v for _, v, _ in answers]
    switch = versions.index(1)
    assert set(versions[:switch]) == {2} and versions.count(1) >= 5
    assert set(versions[switch + 2:]) == {1}  # two clients: one answer in flight may trail
    for _, version, score in answers:
        assert score == pytest.approx(expected[version], rel=1e-6)


def test_mlflow_models_serve_of_the_champion(line, tmp_path) -> None:
    """The registered champion (v1 after the rollback), served by MLflow itself in a fresh
    process. ``--env-manager local``: a fresh virtualenv would download torch (GBs);
    test_pyfunc_is_self_contained shows the model needs no installed exdd."""
    _, repo, params, models, _ = line
    images = _benchmark_images(repo, params, 3)
    expected = predict_scores(models[1], images, tmp_path / "p")
    port = free_port()
    log = open(tmp_path / "mlflow.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "models", "serve", "-m", "models:/exdd-demo@champion",
         "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "-w", "1"],
        stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path,
        env={**os.environ, "MLFLOW_TRACKING_URI": tracking_uri(params.publish, repo)})
    try:
        payload = {"dataframe_split": {"columns": ["image"], "data": [
            [base64.b64encode(p.read_bytes()).decode()] for p in images]}}
        deadline = time.monotonic() + READY_TIMEOUT_S
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120.0) as client:
            while True:
                assert proc.poll() is None, (tmp_path / "mlflow.log").read_text()[-3000:]
                try:
                    if client.get("/ping").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, (tmp_path / "mlflow.log").read_text()[-3000:]
                time.sleep(0.5)
            response = client.post("/invocations", json=payload)
            assert response.status_code == 200, response.text
            rows = response.json()["predictions"]
            bad = client.post("/invocations", json={"dataframe_split": {
                "columns": ["image"], "data": [[base64.b64encode(b"/etc/passwd").decode()]]}})
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
    np.testing.assert_allclose([r["score"] for r in rows], expected, rtol=1e-6)
    assert all(r["flagged"] == (r["score"] >= r["threshold"]) for r in rows)
    assert bad.status_code >= 400 and "passwd" not in bad.text.replace("/etc/passwd", "")


def test_pyfunc_is_self_contained(line, tmp_path) -> None:
    """Loaded where exdd is not importable, the champion runs on the code it carries, and
    every requirement it names is a released package at the version in use."""
    _, repo, params, _, _ = line
    image = _benchmark_images(repo, params, 1)[0]
    code = (
        "import sys, os, importlib.metadata as md\n"
        "sys.meta_path[:] = [f for f in sys.meta_path if '__editable__' not in repr(f)]\n"
        "sys.path[:] = [p for p in sys.path if not os.path.isdir(os.path.join(p or '.', 'exdd'))]\n"
        "try:\n    import exdd\n    sys.exit('exdd is still importable')\n"
        "except ImportError:\n    pass\n"
        "import mlflow, pandas as pd\n"
        "mlflow.set_tracking_uri(sys.argv[1])\n"
        "uri = 'models:/exdd-demo@champion'\n"
        "m = mlflow.pyfunc.load_model(uri)\n"
        "out = m.predict(pd.DataFrame({'image': [open(sys.argv[2], 'rb').read()]}))\n"
        "import exdd\n"
        "reqs = open(mlflow.pyfunc.get_model_dependencies(uri)).read().split()\n"
        "print(exdd.__file__, float(out['score'][0]).hex(), *reqs)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", code, tracking_uri(params.publish, repo),
                           str(image)], capture_output=True, text=True, cwd="/", env=env,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    where, score, *reqs = proc.stdout.split()
    assert where.endswith("/artifacts/code/exdd/__init__.py")  # the model's own copy
    assert not where.startswith(str(Path(exdd.__file__).parent))
    assert float.fromhex(score) == pytest.approx(
        predict_scores(repo / params.publish.champion_dir, [image], tmp_path / "p")[0], rel=1e-6)
    from importlib.metadata import version

    pins = dict(r.split("==") for r in reqs if "==" in r)
    assert "exdd" not in pins and {"torch", "faiss-cpu", "pillow"} <= set(pins)
    assert all(version(name) == pinned for name, pinned in pins.items())
