"""The line workspace's pipeline, defined once: the stages ``dvc.yaml`` declares.

Two executors run these stages: ``dvc repro`` (an operator, or CI, in a workspace) runs
each stage's ``cmd``; the nightly run (``exdd nightly`` and the Airflow DAG, both
``exdd.pipeline.nightly``) calls the same library functions in-process and then records
each stage with ``dvc commit``, exactly as ``dvc repro`` would have. They cannot drift
because there is one definition, this table: a workspace's ``dvc.yaml`` is generated from
it (``exdd workspace init`` writes it, ``exdd workspace sync`` rewrites it), the nightly
refuses to record stages in a workspace whose ``dvc.yaml`` is not the generated one, and the
paths the steps write come from the same constants (a test runs ``dvc repro`` and the
nightly steps in real workspaces and compares their outputs).

Why generate dvc.yaml rather than make the DAG's tasks call ``dvc repro``: the nightly
steps need what DVC cannot express (a per-run id, a gate against the registry's champion,
crash-safe intake journals, typed summaries for the next task), and a DVC stage that
re-entered the pipeline would hide them behind a subprocess; the stages themselves stay
plain ``exdd`` commands a person can run.

Paths are relative to the workspace root. A run's intake report is ``reports/intake/<run
id>`` for both executors (``exdd validate --reports`` names a command-line run
``validate__<UTC time>``); the folder of all reports is the stage's persistent, uncached
output, so a repro never deletes the nights before it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from exdd.detector.modelio import CHECKSUMS, CONTENT_FILES
from exdd.errors import ConfigError
from exdd.fsutil import write_text_atomic

DVC_YAML = "dvc.yaml"
INBOX = "data/inbox"
DATASET = "data/dataset"
MANIFEST = f"{DATASET}/manifest.csv"  # exdd.line.intake.manifest.MANIFEST_NAME
SYNTHETIC_DIR = "data/synthetic"
BENCHMARK = "data/benchmark"  # gate.benchmark of params.yaml: the gate scores on it too
CANDIDATE_DIR = "models/candidate"
INTAKE_REPORTS = "reports/intake"
METRICS_REPORT = "reports/metrics.json"
PLOTS_DIR = "reports/plots"
# The model's content files, not its folder: evaluate and the gate add metrics.json /
# gate.json beside them without changing the model.
MODEL_FILES = tuple(f"{CANDIDATE_DIR}/{name}" for name in (*CONTENT_FILES, CHECKSUMS))


@dataclass(frozen=True)
class Out:
    """One output of a stage, as dvc.yaml lists it (``kind``: outs, metrics or plots)."""

    path: str
    kind: str = "outs"
    options: dict[str, Any] = field(default_factory=dict)

    def entry(self) -> str | dict[str, dict[str, Any]]:
        return {self.path: dict(self.options)} if self.options else self.path


@dataclass(frozen=True)
class Stage:
    """A stage: the command ``dvc repro`` runs, what it reads, which params, what it makes."""

    name: str
    cmd: str
    deps: tuple[str, ...]
    outs: tuple[Out, ...]
    params: tuple[str, ...] = ()

    def paths(self, kind: str) -> tuple[str, ...]:
        return tuple(o.path for o in self.outs if o.kind == kind)

    def entry(self) -> dict[str, Any]:
        out: dict[str, Any] = {"cmd": self.cmd, "deps": list(self.deps)}
        if self.params:
            out["params"] = list(self.params)
        for kind in ("outs", "metrics", "plots"):
            listed = [o.entry() for o in self.outs if o.kind == kind]
            if listed:
                out[kind] = listed
        return out


def _plot(path: str, title: str, x: str, y: str) -> Out:
    return Out(path, "plots", {"cache": False, "title": title, "x": x, "y": y})


STAGES: tuple[Stage, ...] = (
    # Files move from the inbox into the data set (or quarantine): the data set persists
    # and grows batch after batch; the emptied inbox is what the stage leaves behind.
    Stage("validate",
          f"exdd validate --inbox {INBOX} --dataset {DATASET} --reports {INTAKE_REPORTS}",
          deps=(INBOX,),
          outs=(Out(DATASET, options={"persist": True}),
                Out(INTAKE_REPORTS, options={"persist": True, "cache": False})),
          params=("intake", "data.mask_threshold")),
    Stage("synthesize", f"exdd synthesize --data {MANIFEST} --out {SYNTHETIC_DIR}",
          deps=(DATASET,), outs=(Out(SYNTHETIC_DIR),), params=("synth",)),
    Stage("fit",
          f"exdd fit --data {MANIFEST} --synthetic {SYNTHETIC_DIR} --out {CANDIDATE_DIR}",
          deps=(DATASET, SYNTHETIC_DIR), outs=tuple(Out(p) for p in MODEL_FILES),
          params=("data", "model")),
    Stage("evaluate",
          f"exdd evaluate --model {CANDIDATE_DIR} --data {BENCHMARK} --json {METRICS_REPORT}",
          deps=(*MODEL_FILES, BENCHMARK),
          outs=(Out(METRICS_REPORT, "metrics", {"cache": False}),)),
    # ROC and PR curves of the candidate, one CSV each, for `dvc plots show / diff`.
    Stage("curves", f"exdd curves --metrics {METRICS_REPORT} --out {PLOTS_DIR}",
          deps=(METRICS_REPORT,),
          outs=(_plot(f"{PLOTS_DIR}/roc.csv", "ROC (image level)", "fpr", "tpr"),
                _plot(f"{PLOTS_DIR}/pr.csv", "Precision-recall (image level)", "recall",
                      "precision"))),
)
HEADER = """\
# A line's pipeline: inbox images -> validated data set -> synthetic defects -> memory banks
# -> benchmark metrics -> ROC / PR curves. `dvc repro` reruns only the stages whose deps or
# params changed; the nightly run (exdd nightly, the Airflow DAG) runs the same stages.
# GENERATED from exdd/line/stages.py: do not edit (`exdd workspace sync` rewrites it).
"""


def stage(name: str) -> Stage:
    found = [s for s in STAGES if s.name == name]
    if not found:
        raise ConfigError(f"no pipeline stage {name!r}; stages: {[s.name for s in STAGES]}")
    return found[0]


def dvc_yaml_text() -> str:
    """The workspace's ``dvc.yaml``, generated from ``STAGES``."""
    body = {"stages": {s.name: s.entry() for s in STAGES}}
    return HEADER + yaml.safe_dump(body, sort_keys=False, width=100)


def write_dvc_yaml(root: str | Path) -> Path:
    """Write the generated ``dvc.yaml`` into a workspace."""
    path = Path(root) / DVC_YAML
    write_text_atomic(path, dvc_yaml_text())
    return path


def check_dvc_yaml(root: str | Path) -> None:
    """A workspace's ``dvc.yaml`` must be the generated one: a hand edit, or a workspace
    made by an older exdd, would let ``dvc repro`` and the nightly record different stages."""
    path = Path(root) / DVC_YAML
    if not path.is_file() or path.read_text() != dvc_yaml_text():
        raise ConfigError(f"{path}: not the pipeline's stage definition (missing, edited or "
                          f"from an older exdd); regenerate it with `exdd workspace sync "
                          f"{Path(root)}`")
