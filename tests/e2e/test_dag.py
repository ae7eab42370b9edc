"""The nightly DAG under real Airflow: parsing, three nights end to end, a killed task.

DagBag must load one DAG per configured line without import errors. Then one tiny line
lives through three nights with ``airflow dags test`` (its own sqlite Airflow home, real
git + DVC workspace, MLflow sqlite registry, local DVC remote): night 1 publishes the first
champion; night 2 (new images, a gate no model can pass) ends cleanly with the champion
unchanged; night 3's publish task is SIGKILLed after it registered the new version and is
retried under the same run, which must leave exactly one version and one tag per model.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from airflow_helpers import BIN, REPO, Line, airflow, airflow_env, make_nightly_line, setup_airflow

from exdd.cli import main as exdd_main
from exdd.data.readers import load_samples
from exdd.data.demo import make_demo
from exdd.inference.scores import SCORE_COLUMNS
from exdd.evaluation.report import METRICS_FILE, scalar_metrics
from exdd.detector.modelio import model_hash
from exdd.line.publish import PAUSE_ENV, published_versions
from exdd.line.registry import CHAMPION, REJECTED, TAG_HASH, Registry
from exdd.line.workspace import Workspace, drop_into_inbox

pytestmark = pytest.mark.slow

LINE = "tiny"
NIGHTS = ("2025-03-01T02:00:00+00:00", "2025-03-02T02:00:00+00:00", "2025-03-03T02:00:00+00:00")
KILL_TIMEOUT_S = 900
TASKS = ("validate_inbox", "synthesize", "build_banks", "evaluate", "gate", "publish",
         "score", "report")

DAGBAG_PROBE = """
import json, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
out = {"errors": {k: str(v) for k, v in bag.import_errors.items()}, "dags": {}}
for dag_id, dag in bag.dags.items():
    out["dags"][dag_id] = {
        "schedule": dag.schedule, "max_active_runs": dag.max_active_runs,
        "catchup": dag.catchup,
        "tasks": {t.task_id: {"upstream": sorted(t.upstream_task_ids), "pool": t.pool,
                              "retries": t.retries, "backoff": t.retry_exponential_backoff,
                              "trigger_rule": getattr(t.trigger_rule, "value", t.trigger_rule),
                              "queue": t.queue}
                  for t in dag.tasks}}
print("DAGBAG" + json.dumps(out))
"""


def dagbag(env: dict[str, str]) -> dict:
    """Load ``dags/`` in a fresh interpreter (the DAG file reads $EXDD_PARAMS at import)."""
    proc = subprocess.run([sys.executable, "-c", DAGBAG_PROBE, str(REPO / "dags")],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.split("DAGBAG", 1)[1])


def test_dagbag_has_one_dag_per_line_without_import_errors(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(
        "lines:\n"
        "  - {name: press-1, workspace: ws1, schedule: '30 1 * * *', retries: 3, queue: gpu}\n"
        "  - {name: press_2, workspace: /srv/ws2, inbox: 's3://inbox/press2'}\n")
    found = dagbag(airflow_env(tmp_path / "home", params))
    assert found["errors"] == {}
    assert set(found["dags"]) == {"exdd_nightly_press-1", "exdd_nightly_press_2"}
    first = found["dags"]["exdd_nightly_press-1"]
    assert first["schedule"] == "30 1 * * *"
    assert (first["max_active_runs"], first["catchup"]) == (1, False)
    assert found["dags"]["exdd_nightly_press_2"]["schedule"] == "0 2 * * *"
    tasks = first["tasks"]
    assert set(tasks) == set(TASKS)
    chain = ["validate_inbox", "synthesize", "build_banks", "evaluate", "gate", "publish"]
    for before, after in zip(chain, chain[1:]):
        assert tasks[after]["upstream"] == [before]
    assert set(tasks["score"]["upstream"]) == {"validate_inbox", "publish"}
    assert set(tasks["report"]["upstream"]) == {"validate_inbox", "evaluate", "gate", "publish",
                                                "score"}
    for task_id in ("validate_inbox", "synthesize", "build_banks", "evaluate", "publish"):
        assert tasks[task_id]["pool"] == "exdd_press-1_repo"
    for task_id in ("score", "report"):
        assert tasks[task_id]["trigger_rule"] == "none_failed_min_one_success"
    assert all(t["retries"] == 3 and t["backoff"] == 2.0 and t["queue"] == "gpu"
               for t in tasks.values())


def test_repository_params_dags_load(tmp_path: Path) -> None:
    found = dagbag(airflow_env(tmp_path / "home", REPO / "params.yaml"))
    assert found["errors"] == {}
    assert set(found["dags"]) == {"exdd_nightly_demo"}


# --------------------------------------------------------------------------- three nights


class Nights:
    """The line, its Airflow environment and what each night left behind."""

    def __init__(self, line: Line, env: dict[str, str]) -> None:
        self.line, self.env = line, env
        self.db = Path(env["AIRFLOW_HOME"]) / "airflow.db"

    def query(self, sql: str, *args: object) -> list[tuple]:
        with sqlite3.connect(self.db) as con:
            return con.execute(sql, args).fetchall()

    def last_run(self) -> tuple[str, str]:
        """(run_id, state) of the newest run of the line's DAG."""
        return self.query("SELECT run_id, state FROM dag_run WHERE dag_id = ? ORDER BY id DESC "
                          "LIMIT 1", self.line.dag_id)[0]

    def states(self, run_id: str) -> dict[str, str | None]:
        return dict(self.query("SELECT task_id, state FROM task_instance WHERE dag_id = ? AND "
                               "run_id = ?", self.line.dag_id, run_id))

    def outcome(self, run_id: str) -> dict:
        return json.loads((self.line.workspace / "reports/outcomes" / f"{run_id}.json").read_text())

    def drop_night(self, seed: int) -> None:
        """New demo images into the inbox, as the line delivers them."""
        params = self.line.params()
        demo = make_demo(self.line.root / f"night-{seed}", params.demo, seed,
                         params.synth.procedural)
        drop_into_inbox(load_samples(demo, "train"), self.line.workspace / "data/inbox",
                        params.intake)

    def registry(self) -> Registry:
        return Registry(self.line.params(), self.line.workspace)


@pytest.fixture(scope="module")
def nights(tmp_path_factory: pytest.TempPathFactory) -> Nights:
    root = tmp_path_factory.mktemp("nightly")
    line = make_nightly_line(root, LINE)
    env = airflow_env(root / "airflow", line.params_file)
    setup_airflow(env, line)
    return Nights(line, env)


@pytest.fixture(scope="module")
def night1(nights: Nights) -> dict:
    airflow(nights.env, "dags", "test", nights.line.dag_id, NIGHTS[0])
    run_id, state = nights.last_run()
    return {"run_id": run_id, "state": state, "tasks": nights.states(run_id),
            "outcome": nights.outcome(run_id)}


@pytest.fixture(scope="module")
def night2(nights: Nights, night1: dict) -> dict:
    nights.drop_night(seed=1)
    nights.line.set_gate(min_image_auroc=1.0, min_pixel_auroc=1.0)
    try:
        airflow(nights.env, "dags", "test", nights.line.dag_id, NIGHTS[1])
    finally:
        nights.line.set_gate(min_image_auroc=0.0, min_pixel_auroc=0.0)
    run_id, state = nights.last_run()
    return {"run_id": run_id, "state": state, "tasks": nights.states(run_id),
            "outcome": nights.outcome(run_id)}


def test_night1_publishes_the_first_champion(nights: Nights, night1: dict) -> None:
    ws, outcome = nights.line.workspace, night1["outcome"]
    assert night1["state"] == "success"
    assert night1["tasks"] == {t: "success" for t in TASKS}
    assert outcome["status"] == "published" and outcome["new_champion"] is True
    assert outcome["gate"]["passed"] is True
    assert (outcome["n_total"], outcome["n_quarantined"]) == (outcome["n_accepted"], 0)
    assert outcome["n_accepted"] > 0
    # the published tag, the MLflow alias and the champion folder name the same model
    assert outcome["published_tag"] == f"model-{LINE}-v1"
    assert [(r.tag, r.model_hash) for r, _ in published_versions(Workspace(ws), LINE)] == \
        [(f"model-{LINE}-v1", outcome["model_hash"])]
    champion = nights.registry().alias(CHAMPION)
    assert int(champion.version) == outcome["champion_version"] == 1
    assert champion.tags[TAG_HASH] == outcome["model_hash"] == model_hash(ws / "models/champion")
    # the metrics: the candidate's benchmark figures, everywhere the same
    metrics = scalar_metrics(json.loads((ws / "models/champion" / METRICS_FILE).read_text()))
    assert outcome["metrics"] == pytest.approx(metrics)
    assert {k: float(champion.tags[k]) for k in metrics} == pytest.approx(metrics)
    assert all(0.0 <= metrics[k] <= 1.0 for k in ("image_auroc", "pixel_auroc", "aupro"))
    # ... and the outcome is logged to MLflow under the run id
    logged = nights.registry().client.get_run(outcome["mlflow_run_id"])
    assert logged.data.tags["exdd.nightly_run_id"] == night1["run_id"]
    assert logged.data.metrics["n_accepted"] == outcome["n_accepted"]
    assert logged.data.metrics["candidate_image_auroc"] == pytest.approx(metrics["image_auroc"])
    # the night's data set and banks are versioned in git (dvc.lock) whatever the gate says
    log = Workspace(ws).git("log", "--format=%s")
    assert f"nightly {LINE} {night1['run_id']}: candidate {outcome['model_hash'][:12]}" in log


def test_night1_scores_every_accepted_image_for_review(nights: Nights, night1: dict) -> None:
    ws, outcome = nights.line.workspace, night1["outcome"]
    run_dir = ws / outcome["scores_dir"]
    assert run_dir == ws / "reviews/scores" / night1["run_id"]
    with open(run_dir / "scores.csv", newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert tuple(reader.fieldnames) == SCORE_COLUMNS
    assert len(rows) == outcome["n_accepted"] == outcome["n_scored"]
    threshold = outcome["metrics"]["threshold"]
    for row in rows:
        assert (ws / row["image"]).is_file() and (run_dir / row["overlay"]).is_file()
        assert row["model_version"] == "1"
        assert int(row["flag"]) == int(float(row["score"]) >= threshold)
    assert sum(int(r["flag"]) for r in rows) == outcome["n_flagged"]


def test_night2_failed_gate_keeps_the_champion(nights: Nights, night1: dict, night2: dict) -> None:
    ws, outcome = nights.line.workspace, night2["outcome"]
    assert night2["state"] == "success"  # a failed gate ends the run cleanly
    assert night2["tasks"] == {**{t: "success" for t in TASKS}, "publish": "skipped"}
    assert outcome["status"] == "gate_failed" and outcome["gate"]["passed"] is False
    assert any(r.startswith("FAIL") for r in outcome["gate"]["reasons"])
    assert outcome["new_champion"] is False and outcome["published_tag"] is None
    assert outcome["model_hash"] != night1["outcome"]["model_hash"]
    # the champion is untouched everywhere: alias, folder, tags
    first = night1["outcome"]["model_hash"]
    registry = nights.registry()
    assert int(registry.alias(CHAMPION).version) == outcome["champion_version"] == 1
    assert model_hash(ws / "models/champion") == first
    assert [r.tag for r, _ in published_versions(Workspace(ws), LINE)] == [f"model-{LINE}-v1"]
    assert registry.alias(REJECTED).tags[TAG_HASH] == outcome["model_hash"]
    # tonight's images were still scored, by the champion
    with open(ws / outcome["scores_dir"] / "scores.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == outcome["n_accepted"] > 0
    assert {r["model_version"] for r in rows} == {"1"}


def _kill_when_registered(nights: Nights, versions_before: int) -> subprocess.Popen:
    """Start night 3 and SIGKILL it once publish has created the new MLflow version."""
    mlflow_db = nights.line.workspace / "mlruns.db"
    # publish waits after registering (test hook), so the kill lands between the MLflow
    # version and the alias move however fast the machine is
    env = {**nights.env, PAUSE_ENV: str(KILL_TIMEOUT_S)}
    proc = subprocess.Popen([str(BIN / "airflow"), "dags", "test", nights.line.dag_id, NIGHTS[2]],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + KILL_TIMEOUT_S
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            running = nights.query("SELECT 1 FROM task_instance WHERE dag_id = ? AND task_id = "
                                   "'publish' AND state = 'running'", nights.line.dag_id)
            if running:
                with sqlite3.connect(mlflow_db) as con:
                    count = con.execute("SELECT count(*) FROM model_versions").fetchone()[0]
                if count > versions_before:
                    os.killpg(proc.pid, signal.SIGKILL)
                    break
            time.sleep(0.05)
    finally:
        if proc.poll() is None and time.monotonic() >= deadline:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return proc


def test_night3_publish_killed_and_retried_leaves_no_duplicate(nights: Nights, night2: dict
                                                               ) -> None:
    ws = nights.line.workspace
    nights.drop_night(seed=2)
    before = nights.registry().versions()
    proc = _kill_when_registered(nights, len(before))
    assert proc.returncode == -signal.SIGKILL, "night 3 ended before publish registered"
    run_id, _ = nights.last_run()
    assert nights.states(run_id)["publish"] == "running"  # killed in the middle of it
    assert int(nights.registry().alias(CHAMPION).version) == 1  # the alias moves last

    for task_id in ("publish", "score", "report"):  # the retry, then the rest of the run
        airflow(nights.env, "tasks", "test", nights.line.dag_id, task_id, run_id)

    outcome = nights.outcome(run_id)
    states = nights.states(run_id)
    assert all(states[t] == "success" for t in TASKS)
    versions = nights.registry().versions()
    hashes = [v.tags[TAG_HASH] for v in versions]
    assert len(hashes) == len(set(hashes)) == len(before) + 1  # one version per model
    new = versions[-1]
    assert new.tags[TAG_HASH] == outcome["model_hash"]
    published = published_versions(Workspace(ws), LINE)
    assert [r.tag for r, _ in published] == [f"model-{LINE}-v1", f"model-{LINE}-v{new.version}"]
    assert int(nights.registry().alias(CHAMPION).version) == int(new.version)
    assert model_hash(ws / "models/champion") == outcome["model_hash"]
    assert outcome["status"] == "published" and outcome["new_champion"] is True
    assert outcome["champion_version"] == int(new.version)


def test_cli_scores_a_batch_lists_lines_and_outcomes(nights: Nights, night1: dict,
                                                     capsys: pytest.CaptureFixture) -> None:
    ws, config = nights.line.workspace, str(nights.line.params_file)
    images = sorted((ws / "data/benchmark/test").glob("*[0-9].png"))[:3]
    assert exdd_main(["score-batch", "--line", LINE, "--params", config, "--run-id", "batch-1",
                      *map(str, images)]) == 0
    with open(ws / "reviews/scores/batch-1/scores.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    champion = str(nights.registry().alias(CHAMPION).version)
    assert [r["image"] for r in rows] == [str(p.relative_to(ws)) for p in images]
    assert {r["model_version"] for r in rows} == {champion}
    assert exdd_main(["lines", "--params", config, "--field", "pool"]) == 0
    assert exdd_main(["outcomes", "--line", LINE, "--params", config, "--json"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert f"exdd_{LINE}_repo" in out
    assert json.loads(out[-1])["run_id"] == nights.last_run()[0]


def test_cli_night_with_an_empty_inbox_ends_without_training(
        nights: Nights, night2: dict, capsys: pytest.CaptureFixture) -> None:
    """``exdd nightly`` runs the DAG's steps without Airflow; nothing new: nothing trained."""
    ws = nights.line.workspace
    assert not [p for p in (ws / "data/inbox").iterdir() if p.is_file()]  # all filed already
    head = Workspace(ws).head()
    versions = len(nights.registry().versions())
    assert exdd_main(["nightly", "--line", LINE, "--params", str(nights.line.params_file),
                      "--run-id", "cli-empty"]) == 0
    outcome = nights.outcome("cli-empty")
    assert outcome["status"] == "no_new_data" and outcome["n_total"] == 0
    assert outcome["gate"]["passed"] is None and outcome["scores_dir"] is None
    assert outcome["champion_version"] == int(nights.registry().alias(CHAMPION).version)
    assert len(nights.registry().versions()) == versions and Workspace(ws).head() == head
    assert "no_new_data" in capsys.readouterr().out
