"""Nightly retraining: one DAG per production line listed in params.yaml (``lines:``).

validate_inbox → synthesize → build_banks → evaluate → gate → publish → score → report.
Every task is a thin call of a step function of ``exdd.pipeline.nightly`` (no detector logic
here); only the steps' typed summaries (``exdd.pipeline.summaries``) travel in XCom, as JSON,
re-validated by the task that reads them; artifacts stay in the line's git + DVC workspace.
A failed intake skips training and a failed gate skips publishing (the step is marked *skipped*, the
champion stays); scoring with the champion and the report run either way. Tasks that touch
the workspace's git/DVC state run in the line's pool of size 1 (``exdd_<line>_repo``,
created at setup: ``airflow pools set exdd_<line>_repo 1 ...``).

The params file is ``$EXDD_PARAMS``, else this repository's ``params.yaml``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import datetime, time, timedelta, timezone
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, TriggerRule, dag, get_current_context, task
from airflow.sdk.exceptions import AirflowSkipException

from exdd import runtime
from exdd.config import LineConfig, load_params
from exdd.pipeline import nightly as pipeline
from exdd.pipeline.summaries import (
    EvalSummary, GateSummary, IntakeSummary, PublishSummary, ScoreSummary,
)

PARAMS_FILE = Path(os.environ.get("EXDD_PARAMS")
                   or Path(__file__).resolve().parents[1] / "params.yaml").resolve()
DAG_PREFIX = "exdd_nightly_"


def _step(line: str, step: Callable[..., Any], *args: Any) -> dict[str, Any]:
    """Run ``step`` for this task's run and push its summary as JSON (XCom); a skipped
    step skips the task. Summaries from upstream tasks come in re-validated."""
    runtime.configure()  # the task process is an entry point: before torch or faiss load
    context = get_current_context()
    run = pipeline.open_run(PARAMS_FILE, line, context["run_id"])
    try:
        return step(run, *args).model_dump(mode="json")
    except pipeline.StepSkipped as why:
        raise AirflowSkipException(str(why)) from None


def nightly_dag(line: LineConfig) -> DAG:
    """The nightly DAG of ``line``."""
    name = line.name
    # Summaries are one XCom each (not one per key); git/DVC steps share the line's pool.
    plain = {"multiple_outputs": False}
    repo = {**plain, "pool": line.repo_pool}
    after_skips = {**plain, "trigger_rule": TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS}

    @dag(
        dag_id=f"{DAG_PREFIX}{name}",
        description=f"exdd nightly retraining of line {name}",
        schedule=line.schedule,
        start_date=datetime.combine(line.start_date, time(), timezone.utc),
        catchup=False,
        max_active_runs=1,
        tags=["exdd", f"line:{name}"],
        doc_md=__doc__,
        default_args={
            "owner": "exdd",
            "retries": line.retries,
            "retry_delay": timedelta(seconds=line.retry_delay_s),
            "retry_exponential_backoff": line.retry_backoff,
            "max_retry_delay": timedelta(seconds=line.max_retry_delay_s),
            "execution_timeout": timedelta(seconds=line.task_timeout_s),
            "queue": line.queue,
        },
    )
    def nightly() -> None:
        @task(**repo)
        def validate_inbox() -> dict:
            return _step(name, pipeline.validate)

        @task(**repo)
        def synthesize(intake: dict) -> dict:
            return _step(name, pipeline.synthesize, IntakeSummary.from_xcom(intake))

        @task(**repo)
        def build_banks() -> dict:
            return _step(name, pipeline.build_banks)

        @task(**repo)
        def evaluate() -> dict:
            return _step(name, pipeline.evaluate)

        @task(**plain)
        def gate(evaluated: dict) -> dict:
            return _step(name, pipeline.gate, EvalSummary.from_xcom(evaluated))

        @task(**repo)
        def publish(decision: dict) -> dict:
            return _step(name, pipeline.publish, GateSummary.from_xcom(decision))

        @task(**after_skips)
        def score(intake: dict) -> dict:
            return _step(name, pipeline.score, IntakeSummary.from_xcom(intake))

        @task(**after_skips)
        def report(intake: dict, evaluated: dict | None, decision: dict | None,
                   published: dict | None, scored: dict) -> dict:
            started = get_current_context()["dag_run"].start_date
            return _step(name, pipeline.report, started.isoformat(timespec="seconds"),
                         IntakeSummary.from_xcom(intake), EvalSummary.from_xcom(evaluated),
                         GateSummary.from_xcom(decision), PublishSummary.from_xcom(published),
                         ScoreSummary.from_xcom(scored))

        intake = validate_inbox()
        banks = build_banks()
        synthesize(intake) >> banks
        evaluated = evaluate()
        banks >> evaluated
        decision = gate(evaluated)
        published = publish(decision)
        scored = score(intake)
        published >> scored
        report(intake, evaluated, decision, published, scored)

    return nightly()


for _line in load_params(PARAMS_FILE).lines:
    globals()[f"{DAG_PREFIX}{_line.name}"] = nightly_dag(_line)
