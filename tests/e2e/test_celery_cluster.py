"""The demo line's DAG on a real Airflow cluster: CeleryExecutor, PostgreSQL, Redis.

Runs the production configuration (``infra/airflow.env``) on loopback: its own PostgreSQL
database and Redis database number, its own Airflow home, an api-server (task execution
API, JWT secret shared by all), a scheduler, a dag-processor and two Celery workers, all
bound to 127.0.0.1. It triggers the demo line's DAG, waits (bounded) for success, checks
that every task was executed by one of the workers (the Celery task id of each task
instance in that worker's log) and that the model was published, then stops everything it
started. Skipped when PostgreSQL or Redis is not reachable on loopback.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from airflow_helpers import BIN, REPO, airflow, airflow_env, make_nightly_line, setup_airflow

from exdd.line.publish import published_versions
from exdd.line.registry import CHAMPION, TAG_HASH, Registry
from exdd.line.workspace import Workspace

pytestmark = pytest.mark.slow

HOST = "127.0.0.1"
POSTGRES = (HOST, 5432)
REDIS = (HOST, 6379)
REDIS_DB = 13  # this test's own Redis database number
LINE = "demo"
WORKERS = ("w1", "w2")
START_TIMEOUT_S = 180
RUN_TIMEOUT_S = 1500
STOP_TIMEOUT_S = 30
INFRA_ENV = REPO / "infra" / "airflow.env"


def reachable(address: tuple[str, int]) -> bool:
    try:
        socket.create_connection(address, timeout=2).close()
        return True
    except OSError:
        return False


def infra_settings() -> dict[str, str]:
    """infra/airflow.env as docker compose reads it (KEY=VALUE, # comments)."""
    pairs = (line.split("=", 1) for line in INFRA_ENV.read_text().splitlines()
             if line.strip() and not line.lstrip().startswith("#"))
    return {key.strip(): value.strip() for key, value in pairs}


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def test_compose_file_runs_the_tested_configuration() -> None:
    """docker-compose.yml's Airflow services use infra/airflow.env, the file tested below."""
    settings = infra_settings()
    assert settings["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert settings["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://")
    assert settings["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"].endswith("/execution/")
    assert not any("SECRET" in key for key in settings)  # secrets come from the environment
    compose = yaml.safe_load((REPO / "infra" / "docker-compose.yml").read_text())
    services = compose["services"]
    airflow_services = {"airflow-init", "airflow-api-server", "airflow-scheduler",
                        "airflow-dag-processor", "airflow-worker"}
    assert airflow_services | {"postgres", "redis", "mlflow", "minio"} <= set(services)
    for name in airflow_services:
        assert services[name]["env_file"] == "airflow.env"
        environment = services[name]["environment"]
        assert "AIRFLOW__API_AUTH__JWT_SECRET" in environment
        assert environment["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith(
            "postgresql+psycopg2://airflow:${POSTGRES_PASSWORD:?")
    command = {name: services[name]["command"] for name in airflow_services}
    assert command["airflow-worker"].startswith("airflow celery worker")
    assert command["airflow-dag-processor"] == "airflow dag-processor"


URL_PASSWORD = re.compile(r"://[^/\s:@]+:([^@\s]+)@")


def test_no_secrets_in_the_repository() -> None:
    """Passwords come from the environment or the git-ignored infra/.env; the committed
    files name them (${VAR}) and example.env holds placeholders only."""
    tracked = subprocess.run(["git", "ls-files", "infra", "params.yaml"], cwd=REPO,
                             capture_output=True, text=True, check=True).stdout.split()
    assert "infra/docker-compose.yml" in tracked and "infra/.env" not in tracked
    for name in tracked:
        for found in URL_PASSWORD.finditer((REPO / name).read_text()):
            assert found.group(1).startswith(("${", "$POSTGRES")), f"{name}: {found.group(0)}"
    compose = yaml.safe_load((REPO / "infra" / "docker-compose.yml").read_text())
    for service, spec in compose["services"].items():
        for key, value in (spec.get("environment") or {}).items():
            if any(word in key for word in ("PASSWORD", "SECRET", "ACCESS_KEY")):
                assert str(value).startswith("${"), f"{service}: {key} is written in the file"
    example = [ln.split("=", 1) for ln in (REPO / "infra" / "example.env").read_text()
               .splitlines() if ln.strip() and not ln.startswith("#")]
    assert example and all(v.startswith("change-me") for k, v in example
                           if "SECRET" in k or "PASSWORD" in k)
    ignored = subprocess.run(["git", "check-ignore", "-q", "infra/.env"], cwd=REPO)
    assert ignored.returncode == 0  # a real infra/.env is never committed


# --------------------------------------------------------------------------- the cluster


class Cluster:
    """Airflow processes started by this test, each in its own process group and log."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env, self.logs = env, logs
        self.procs: dict[str, subprocess.Popen] = {}
        logs.mkdir(parents=True, exist_ok=True)

    def start(self, name: str, *args: str) -> None:
        with open(self.logs / f"{name}.log", "w") as log:
            self.procs[name] = subprocess.Popen(
                [str(BIN / "airflow"), *args], env=self.env, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True)

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")

    def check_alive(self) -> None:
        dead = {n: p.returncode for n, p in self.procs.items() if p.poll() is not None}
        assert not dead, f"cluster processes exited: {dead}\n" + "\n".join(
            f"--- {n}\n{self.log(n)[-2000:]}" for n in dead)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for proc in self.procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.fixture
def database() -> Iterator[str]:
    """A fresh PostgreSQL database of this test (trust auth, user postgres), dropped after."""
    if not (reachable(POSTGRES) and reachable(REDIS)):
        pytest.skip("PostgreSQL (127.0.0.1:5432) or Redis (127.0.0.1:6379) is not reachable")
    import psycopg2

    name = f"exdd_celery_test_{os.getpid()}"
    admin = psycopg2.connect(host=HOST, port=POSTGRES[1], user="postgres", dbname="postgres")
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
        cur.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with admin.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                        (name,))
            cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.close()


@pytest.fixture
def redis_db() -> Iterator[str]:
    import redis

    client = redis.Redis(host=HOST, port=REDIS[1], db=REDIS_DB)
    client.flushdb()
    try:
        yield f"redis://{HOST}:{REDIS[1]}/{REDIS_DB}"
    finally:
        client.flushdb()
        client.close()


def query(dsn: str, sql: str, *args: object) -> list[tuple]:
    import psycopg2

    with psycopg2.connect(dsn) as con, con.cursor() as cur:
        cur.execute(sql, args)
        rows = cur.fetchall()
    con.close()
    return rows


def wait_for_api(cluster: Cluster, port: int) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        cluster.check_alive()
        try:
            urllib.request.urlopen(f"http://{HOST}:{port}/api/v2/monitor/health", timeout=5)
            return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(2)
    raise AssertionError(f"api-server did not answer within {START_TIMEOUT_S} s:\n"
                         f"{cluster.log('api-server')[-3000:]}")


def wait_for_run(cluster: Cluster, dsn: str, dag_id: str) -> tuple[str, str]:
    """(run_id, final state) of the DAG's run, within RUN_TIMEOUT_S."""
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while time.monotonic() < deadline:
        cluster.check_alive()
        rows = query(dsn, "SELECT run_id, state FROM dag_run WHERE dag_id = %s", dag_id)
        if rows and rows[0][1] in ("success", "failed"):
            return rows[0]
        time.sleep(5)
    raise AssertionError(f"{dag_id} did not finish within {RUN_TIMEOUT_S} s:\n" +
                         "\n".join(f"--- {n}\n{cluster.log(n)[-1500:]}" for n in cluster.procs))


def test_demo_line_runs_on_two_celery_workers(tmp_path: Path, database: str, redis_db: str
                                              ) -> None:
    line = make_nightly_line(tmp_path, LINE)
    port = free_port()
    dsn = f"postgresql://postgres@{HOST}:{POSTGRES[1]}/{database}"
    sqlalchemy_url = dsn.replace("postgresql://", "postgresql+psycopg2://")
    settings = {
        **infra_settings(),  # the production configuration, then only addresses replaced
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": sqlalchemy_url,
        "AIRFLOW__CELERY__BROKER_URL": redis_db,
        "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{sqlalchemy_url}",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://{HOST}:{port}/execution/",
        "AIRFLOW__API__HOST": HOST,
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(tmp_path / "airflow" / "logs"),
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
        "AIRFLOW__API__SECRET_KEY": secrets.token_hex(32),
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
    }
    settings.pop("EXDD_PARAMS")
    env = airflow_env(tmp_path / "airflow", line.params_file, **settings)
    setup_airflow(env, line)
    cluster = Cluster(env, tmp_path / "logs")
    try:
        cluster.start("api-server", "api-server", "--host", HOST, "--port", str(port))
        cluster.start("scheduler", "scheduler", "--skip-serve-logs")
        cluster.start("dag-processor", "dag-processor")
        for name in WORKERS:
            cluster.start(name, "celery", "worker", "--celery-hostname", f"{name}@%h",
                          "--concurrency", "1", "--skip-serve-logs")
        wait_for_api(cluster, port)
        airflow(env, "dags", "unpause", line.dag_id)
        airflow(env, "dags", "trigger", line.dag_id)
        run_id, state = wait_for_run(cluster, dsn, line.dag_id)
        worker_logs = {name: cluster.log(name) for name in WORKERS}
    finally:
        cluster.stop()

    tis = query(dsn, "SELECT task_id, state, queue, hostname, external_executor_id, executor "
                     "FROM task_instance WHERE dag_id = %s AND run_id = %s", line.dag_id, run_id)
    assert state == "success", f"run {run_id} ended {state}: {tis}"
    assert len(tis) == 8 and all(ti[1] == "success" for ti in tis)
    ran_on: dict[str, str] = {}
    for task_id, _, queue, hostname, celery_id, _ in tis:
        assert queue == "default" and hostname and celery_id
        marker = re.compile(rf"\[{re.escape(celery_id)}\] Executing workload in Celery")
        found = [name for name, log in worker_logs.items() if marker.search(log)]
        assert len(found) == 1, f"{task_id} (celery id {celery_id}) executed by {found}"
        ran_on[task_id] = found[0]
    print("tasks per worker:", json.dumps(ran_on))

    outcome = json.loads((line.workspace / "reports/outcomes" / f"{run_id}.json").read_text())
    assert outcome["status"] == "published" and outcome["published_tag"] == f"model-{LINE}-v1"
    tags = [r.tag for r, _ in published_versions(Workspace(line.workspace), LINE)]
    assert tags == [f"model-{LINE}-v1"]
    champion = Registry(line.params(), line.workspace).alias(CHAMPION)
    assert int(champion.version) == 1 and champion.tags[TAG_HASH] == outcome["model_hash"]
