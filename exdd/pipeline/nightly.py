"""The nightly run of one production line, step by step, as plain library calls.

The Airflow DAG (``dags/exdd_nightly.py``, one per line) and ``exdd nightly`` (no Airflow)
run the same steps: validate → synthesize → build_banks → evaluate → gate → publish →
score → report. A step takes the run (:class:`LineRun`: line, run id, workspace, the
workspace's params) and returns a typed summary (``exdd.pipeline.summaries``), the only
thing that travels between Airflow tasks; artifacts stay in the line workspace. The steps
validate, synthesize, build_banks and evaluate are the stages of the workspace's dvc.yaml
(``exdd.line.stages``, its one definition): they write the paths the stages declare and
record them with ``dvc commit``. Every step can be repeated for the same run without
duplicating data or versions: intake keeps a per-run report and a
crash-safe journal, models and score folders are written atomically, the gate reuses a
decision made on the same model, benchmark and champion, publishing is idempotent by model
hash, and the MLflow outcome run is found again by the run id.

Three conditions end a night early, cleanly, with the champion untouched: an intake that
failed (too many bad files, or none) stops training, a failed gate stops publishing, and
so does a line an operator pinned by a rollback (the candidate is still built, evaluated
and gated, its MLflow run recorded). The step then raises :class:`StepSkipped`; scoring
and the report still run.

Review outputs (read by the review dashboard, ``exdd.line.review``), in the line workspace,
folders from the ``review`` section of its params:

- ``reviews/scores/<run_id>/scores.csv``: one row per image accepted this night
  (``exdd.inference.scores.ScoreRow``: image, score, flag, the champion's threshold and
  MLflow version, overlay, error), written only when a champion exists and images were
  accepted;
- ``reviews/scores/<run_id>/overlays/<stem>.png``: heatmap overlays (one colour scale for
  the whole run);
- ``reports/outcomes/<run_id>.json``: the run's ``exdd.line.outcome.Outcome`` (status,
  intake counts and drift, the candidate's figures, the gate's verdict, the champion and
  its pin, the scoring counts), also logged to MLflow as a run tagged ``exdd.kind=nightly``
  in the line's experiment.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from exdd.config import LineConfig, Params
from exdd.errors import ConfigError, DataError
from exdd.line.lines import open_line
from exdd.evaluation.report import HEADLINE_METRICS
from exdd.line.outcome import GateOutcome, Outcome
from exdd.line.stages import (
    CANDIDATE_DIR, DATASET, INTAKE_REPORTS, MANIFEST, METRICS_REPORT, SYNTHETIC_DIR,
    check_dvc_yaml,
)
from exdd.pipeline.summaries import (
    BanksSummary, EvalSummary, GateSummary, IntakeSummary, PublishSummary, ScoreSummary,
    SynthSummary,
)
from exdd.storage import is_s3_uri

if TYPE_CHECKING:
    from exdd.line.champion import Pin

# Where a run notes what its steps did (a repeated step reads it): not a pipeline output.
RUN_STATE = "reports/nightly"
# Airflow's own run-id alphabet; no '/' so that a run id is always one folder name.
RUN_ID_RE = re.compile(r"[A-Za-z0-9_~:+-][A-Za-z0-9_.~:+-]*")
NIGHTLY_TAG = "exdd.kind"
RUN_ID_TAG = "exdd.nightly_run_id"


class StepSkipped(Exception):
    """This step must not run tonight; the message says why. The run ends cleanly."""


@dataclass(frozen=True)
class LineRun:
    """One nightly run of one line: the line, the run id, its workspace and params."""

    line: LineConfig
    run_id: str
    workspace: Path
    params: Params

    def path(self, relative: str | os.PathLike[str]) -> Path:
        """A workspace path (absolute paths pass through)."""
        return self.workspace / relative

    @property
    def dataset(self) -> Path:
        return self.path(self.line.dataset)

    @property
    def candidate(self) -> Path:
        return self.path(CANDIDATE_DIR)

    @property
    def benchmark(self) -> Path:
        return self.path(self.params.gate.benchmark)

    @property
    def intake_report(self) -> Path:
        return self.path(INTAKE_REPORTS) / self.run_id

    @property
    def scores_dir(self) -> Path:
        return self.path(self.params.review.scores_dir) / self.run_id

    @property
    def outcome_file(self) -> Path:
        return Outcome.path(self.path(self.params.review.outcomes_dir), self.run_id)

    def state_file(self, step: str) -> Path:
        """Where a step notes what it did in this run, so that a repeat can skip it."""
        return self.path(RUN_STATE) / self.run_id / f"{step}.json"


def open_run(params_file: str | os.PathLike[str] | None, line: str, run_id: str) -> LineRun:
    """The run ``run_id`` of ``line``; the line's settings come from its workspace."""
    if not RUN_ID_RE.fullmatch(run_id):
        raise ConfigError(f"run id {run_id!r}: only letters, digits and _.~:+- are allowed")
    opened = open_line(params_file, line)
    return LineRun(opened.config, run_id, opened.workspace, opened.params)


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# --------------------------------------------------------------------------- versioning


def record_stages(run: LineRun, *stages: str) -> None:
    """Record what a step produced as its ``dvc.yaml`` stage (hashes into dvc.lock, files
    into the DVC cache), exactly as ``dvc repro`` would have; the workspace's dvc.yaml must
    be the pipeline's stage definition (``exdd.line.stages``), and so the data set path."""
    from exdd.line.workspace import Workspace

    check_dvc_yaml(run.workspace)
    if Path(run.line.dataset) != Path(DATASET):
        raise ConfigError(f"line {run.line.name}: dataset {run.line.dataset} is not the "
                          f"pipeline's {DATASET}; DVC would record the wrong folder")
    inbox = run.line.inbox
    if not is_s3_uri(inbox):
        run.path(inbox).mkdir(parents=True, exist_ok=True)  # a dependency of 'validate'
    Workspace(run.workspace).dvc("commit", "-q", "-f", *stages)


def commit_lock(run: LineRun, message: str, ignores: tuple[str, ...] = ()) -> None:
    """Commit dvc.lock (with the data set's and the given ``.gitignore`` files DVC keeps
    beside its outputs) when it changed: a night leaves nothing uncommitted."""
    from exdd.line.workspace import Workspace

    ws = Workspace(run.workspace)
    lock = ws.path("dvc.lock")
    if ws.show("HEAD", "dvc.lock") == lock.read_text():
        return  # a repeated step: already committed
    paths = {str(Path(run.line.dataset).parent / ".gitignore"), *ignores}
    ws.commit(message, ["dvc.lock", *sorted(paths)])


def commit_lineage(run: LineRun, model_hash: str) -> None:
    """Commit dvc.lock: tonight's data set, synthetic defects and banks, gated or not."""
    commit_lock(run, f"nightly {run.line.name} {run.run_id}: candidate {model_hash[:12]}",
                (str(Path(SYNTHETIC_DIR).parent / ".gitignore"), f"{CANDIDATE_DIR}/.gitignore"))


# --------------------------------------------------------------------------- steps


def validate(run: LineRun) -> IntakeSummary:
    """Intake: validate the inbox into the data set, bad files to quarantine."""
    from exdd.line.intake import IntakeResult, validate_inbox
    from exdd.line.intake.validate import REPORT_JSON

    summary = run.intake_report / REPORT_JSON
    if summary.is_file():  # this run's intake already happened: its report says what it did
        result = IntakeResult.from_json(json.loads(summary.read_text())["summary"])
    else:
        inbox = run.line.inbox if is_s3_uri(run.line.inbox) else str(run.path(run.line.inbox))
        result = validate_inbox(inbox, run.dataset, run.intake_report, run.params.intake,
                                run.params.data)
    if result.n_total:  # an empty inbox changed nothing: nothing to record or commit
        record_stages(run, "validate")
        if not result.passed:  # no candidate tonight: the held batch is the lineage
            commit_lock(run, f"nightly {run.line.name} {run.run_id}: intake of batch "
                             f"{result.batch} failed, held in quarantine")
    return IntakeSummary(
        batch=result.batch, n_total=result.n_total, n_accepted=result.n_accepted,
        n_quarantined=result.n_quarantined, n_held=result.n_held,
        failed_fraction=result.failed_fraction, passed=result.passed, drift=result.drift,
        report=str(result.report_path) if result.report_path else None)


def require_intake(intake: IntakeSummary) -> None:
    """Training needs a batch that passed validation."""
    if not intake.passed:
        raise StepSkipped(f"{intake.problem()}: no training tonight")


def synthesize(run: LineRun, intake: IntakeSummary) -> SynthSummary:
    """Synthetic defects for the positive bank, from the data set's normal images."""
    from exdd.data.readers import load_samples
    from exdd.data.synth import synthesize as make_synthetic

    require_intake(intake)
    out = run.path(SYNTHETIC_DIR)
    make_synthetic(run.path(MANIFEST), out, run.params.synth, run.params.data)
    record_stages(run, "synthesize")
    return SynthSummary(synthetic=str(out), n_synthetic=len(load_samples(out)))


def build_banks(run: LineRun) -> BanksSummary:
    """Fit the memory banks on the data set's train split plus the synthetic defects."""
    from exdd.data.readers import load_samples
    from exdd.detector.model import ExDD
    from exdd.detector.modelio import CHECKSUMS, model_hash

    marker = run.state_file("banks")
    built = BanksSummary.read(marker)
    if built is not None:
        done = (run.candidate / CHECKSUMS).is_file() and model_hash(run.candidate)
        if done == built.model_hash:
            return built  # this run built the candidate already: a repeated step refits nothing
    train = load_samples(run.path(MANIFEST), "train")
    synthetic = [s for s in load_samples(run.path(SYNTHETIC_DIR)) if s.label == 1]
    model = ExDD(run.params.model, run.params.data).fit(train, synthetic)
    built = BanksSummary(model_hash=model.save(run.candidate),
                         bank_normal=len(model.bank_normal_),
                         bank_defect=len(model.bank_defect_), n_train=len(train),
                         n_synthetic=len(synthetic))
    record_stages(run, "fit")
    built.write(marker)
    return built


def evaluate(run: LineRun) -> EvalSummary:
    """Benchmark metrics of the candidate (reused when already made on this split), then
    version the night's data and banks in git."""
    from exdd.detector.modelio import model_hash
    from exdd.line.gate import benchmark_samples, metrics_on

    samples, bench_hash = benchmark_samples(run.benchmark)
    metrics = metrics_on(run.candidate, samples, bench_hash)
    metrics.write(run.path(METRICS_REPORT))
    record_stages(run, "evaluate")
    digest = model_hash(run.candidate)
    commit_lineage(run, digest)
    return EvalSummary(model_hash=digest, benchmark_hash=bench_hash, metrics=metrics.scalars())


def current_champion(run: LineRun) -> tuple[int | None, str | None]:
    """The champion's MLflow version and model hash, (None, None) when there is none."""
    from exdd.line.registry import CHAMPION, TAG_HASH, Registry

    champion = Registry(run.params, run.workspace).alias(CHAMPION)
    if champion is None:
        return None, None
    return int(champion.version), champion.tags.get(TAG_HASH)


def gate(run: LineRun, evaluated: EvalSummary) -> GateSummary:
    """The promotion gate. A decision already made on this very model and benchmark is
    reused (a repeated step logs no second MLflow run) while the champion it was made
    against is still the champion, or when it is the candidate itself (already published)."""
    from exdd.line.gate import read_gate, run_gate

    decision = read_gate(run.candidate)
    version, champion_hash = current_champion(run)
    reusable = (decision is not None and decision.model_hash == evaluated.model_hash
                and decision.benchmark_hash == evaluated.benchmark_hash
                and (decision.champion_version == version
                     or (decision.passed and champion_hash == decision.model_hash)))
    if not reusable:
        decision = run_gate(run.candidate, run.benchmark, run.params, run.workspace)
    return GateSummary(
        passed=decision.passed, reasons=decision.reasons, metrics=decision.metrics,
        champion_metrics=decision.champion_metrics, champion_version=decision.champion_version,
        model_hash=decision.model_hash, rejected_version=decision.rejected_version,
        mlflow_run_id=decision.run_id)


def publish(run: LineRun, decision: GateSummary) -> PublishSummary:
    """Make the gated candidate the champion (DVC push, MLflow version, git tag, alias)."""
    from exdd.line.publish import publish as publish_model

    if not decision.passed:
        kept = decision.champion_version
        raise StepSkipped("gate failed: " + (f"champion v{kept} stays" if kept else
                                             "no champion yet") + "; " +
                          "; ".join(r for r in decision.reasons if r.startswith("FAIL")))
    pin = line_pin(run)
    if pin is not None and current_champion(run)[1] != decision.model_hash:
        raise StepSkipped(f"line {run.line.name} is {pin.describe()}; candidate "
                          f"{decision.model_hash[:12]} passed the gate and is recorded "
                          f"(MLflow run {decision.mlflow_run_id}), not published")
    done = publish_model(run.candidate, run.params, run.workspace)
    return PublishSummary(tag=done.tag, version=done.version, model_hash=done.model_hash)


def line_pin(run: LineRun) -> Pin | None:
    """The pin an operator's rollback put on the line, or None."""
    from exdd.line.champion import read_pin
    from exdd.line.registry import Registry

    return read_pin(Registry(run.params, run.workspace))


def accepted_images(intake: IntakeSummary, dataset: Path) -> list[Path]:
    """The images this night's intake accepted, from its report."""
    from exdd.line.intake.validate import REPORT_JSON

    if not intake.report:
        return []
    summary = Path(intake.report) / REPORT_JSON
    if not summary.is_file():
        raise DataError(f"{summary}: intake report missing; cannot tell which images to score")
    return [dataset / p for p in json.loads(summary.read_text())["summary"]["accepted"]]


def score_images(run: LineRun, images: list[Path]) -> ScoreSummary:
    """Score ``images`` with the current champion into this run's review folder."""
    from exdd.detector.model import ExDD
    from exdd.inference.batch import write_predictions
    from exdd.line.champion import load_champion

    with tempfile.TemporaryDirectory(prefix="exdd-champion-") as tmp:
        champion = None if not images else load_champion(run.params, run.workspace, Path(tmp))
        if champion is None:
            return ScoreSummary(scores_dir=None,
                                reason="no images" if not images else "no champion yet")
        version, threshold = champion.version, champion.threshold
        done = write_predictions(ExDD.load(champion.model_dir), images, run.scores_dir,
                                 threshold, version, relative_to=run.workspace)
    return ScoreSummary(
        scores_dir=os.path.relpath(run.scores_dir, run.workspace), n_scored=done.n_scored,
        n_flagged=done.n_flagged, model_version=version, threshold=threshold,
        unreadable=[(os.path.relpath(p, run.workspace), why) for p, why in done.failed])


def score(run: LineRun, intake: IntakeSummary) -> ScoreSummary:
    """Score the night's accepted images with whichever model is champion now."""
    return score_images(run, accepted_images(intake, run.dataset))


def report(run: LineRun, started: str, intake: IntakeSummary, evaluated: EvalSummary | None,
           decision: GateSummary | None, published: PublishSummary | None,
           scored: ScoreSummary | None) -> Outcome:
    """Write the run's outcome where the dashboard reads it, and log it to MLflow."""
    pin = line_pin(run)
    if decision is not None:
        gate_info = GateOutcome(passed=decision.passed, reasons=decision.reasons)
        status = ("published" if published else "pinned" if decision.passed
                  else "gate_failed")
    else:  # training never started: the intake failed
        gate_info = GateOutcome(passed=None, reasons=[f"NOT RUN {intake.problem()}"])
        status = "no_new_data" if intake.n_total == 0 else "intake_failed"
    scored = scored or ScoreSummary(scores_dir=None)
    outcome = Outcome(
        run_id=run.run_id, line=run.line.name, started=started, finished=now(),
        status=status, batch=intake.batch, n_total=intake.n_total,
        n_accepted=intake.n_accepted, n_quarantined=intake.n_quarantined,
        n_held=intake.n_held, drift=intake.drift,
        metrics=evaluated.metrics if evaluated else {}, gate=gate_info,
        model_hash=evaluated.model_hash if evaluated else None,
        champion_version=current_champion(run)[0],
        new_champion=(published is not None and decision is not None
                      and published.version != decision.champion_version),
        published_tag=published.tag if published else None,
        scores_dir=scored.scores_dir, n_scored=scored.n_scored, n_flagged=scored.n_flagged,
        pinned=pin.describe() if pin is not None else None,
    )
    outcome = outcome.model_copy(update={"mlflow_run_id": log_outcome(run, outcome)})
    outcome.write(run.path(run.params.review.outcomes_dir))
    return outcome


def log_outcome(run: LineRun, outcome: Outcome) -> str:
    """The run's outcome as an MLflow run of the line's experiment (one per run id)."""
    from mlflow.entities import Metric, Param, RunStatus

    from exdd.line.registry import Registry

    registry = Registry(run.params, run.workspace)
    client = registry.client
    experiment = registry.experiment_id()
    found = client.search_runs([experiment], f"tags.`{RUN_ID_TAG}` = '{run.run_id}'")
    if found and found[0].info.status == RunStatus.to_string(RunStatus.FINISHED):
        return found[0].info.run_id  # a repeated report: logged already
    mlrun = found[0] if found else client.create_run(
        experiment, run_name=f"nightly-{run.run_id}",
        tags={NIGHTLY_TAG: "nightly", RUN_ID_TAG: run.run_id, "exdd.line": run.line.name,
              "exdd.status": outcome.status})
    run_id = mlrun.info.run_id
    stamp = int(datetime.now(timezone.utc).timestamp() * 1000)
    figures = {"n_total": outcome.n_total, "n_accepted": outcome.n_accepted,
               "n_quarantined": outcome.n_quarantined, "n_scored": outcome.n_scored,
               "n_flagged": outcome.n_flagged, "new_champion": int(outcome.new_champion),
               "n_held": outcome.n_held, "n_drift_events": len(outcome.drift),
               **{f"candidate_{k}": v for k, v in outcome.metrics.items()}}
    if outcome.gate.passed is not None:
        figures["gate_passed"] = int(outcome.gate.passed)
    client.log_batch(run_id, metrics=[Metric(k, float(v), stamp, 0) for k, v in figures.items()],
                     params=[] if found else [
                         Param("champion_version", str(outcome.champion_version)),
                         Param("model_hash", str(outcome.model_hash))])
    client.log_dict(run_id, outcome.model_dump(mode="json", exclude={"mlflow_run_id"}),
                    "outcome.json")
    client.set_terminated(run_id)
    return run_id


def run_nightly(run: LineRun) -> Outcome:
    """Every step in order, without Airflow: the same night the DAG runs."""
    started = now()
    intake = validate(run)
    evaluated = decision = published = None
    try:
        synthesize(run, intake)
        build_banks(run)
        evaluated = evaluate(run)
        decision = gate(run, evaluated)
        published = publish(run, decision)
    except StepSkipped:
        pass  # the outcome says why
    return report(run, started, intake, evaluated, decision, published, score(run, intake))


def summary(outcome: Outcome) -> list[str]:
    """A few lines for a person: counts, metrics, the gate's reasons, the champion."""
    metrics = outcome.metrics
    figures = "  ".join(f"{k} {metrics[k]:.4f}" for k in HEADLINE_METRICS if k in metrics)
    lines = [f"line {outcome.line} run {outcome.run_id}: {outcome.status}",
             f"  intake: {outcome.n_total} file(s), {outcome.n_accepted} accepted, "
             f"{outcome.n_quarantined} quarantined"
             + (f" ({outcome.n_held} held with the failed batch)" if outcome.n_held else "")]
    lines += [f"  drift: {event['message']}" for event in outcome.drift]
    if figures:
        lines.append(f"  candidate {str(outcome.model_hash)[:12]}: {figures}")
    lines += [f"  gate: {reason}" for reason in outcome.gate.reasons]
    champion = outcome.champion_version
    if outcome.pinned:
        lines.append(f"  {outcome.pinned}")
    lines.append(f"  champion: {'v' + str(champion) if champion else 'none'}"
                 + (f" (new: {outcome.published_tag})" if outcome.new_champion else ""))
    if outcome.scores_dir:
        lines.append(f"  scored {outcome.n_scored} image(s), {outcome.n_flagged} flagged: "
                     f"{outcome.scores_dir}")
    return lines
