"""``exdd nightly | score-batch | outcomes | lines | drop-demo``: lines without Airflow.

``exdd nightly --line NAME`` runs the very steps the line's DAG runs (``exdd.pipeline.nightly``),
in one process; ``score-batch`` scores images with the line's champion into the review
folder; ``outcomes`` prints the latest runs' outcomes; ``lines`` lists the configured lines
(workspace, Airflow pool, schedule: for set-up scripts); ``drop-demo`` delivers a night of
generated demo images to a line's inbox, as a line would. The line comes from the ``lines:``
list of the platform params file (``--params``, else $EXDD_PARAMS, else ./params.yaml).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from exdd.cli.common import (
    collect_images, line_arguments, params_argument, report_unreadable, run_stamp,
)
from exdd.errors import ConfigError

RUN_PREFIX = {"nightly": "cli", "score-batch": "batch"}


def _run_id(args: argparse.Namespace) -> str:
    return args.run_id or f"{RUN_PREFIX[args.command]}__{run_stamp()}"


def _nightly(args: argparse.Namespace) -> int:
    from exdd.pipeline.nightly import open_run, run_nightly, summary

    run = open_run(args.params, args.line, _run_id(args))
    outcome = run_nightly(run)
    print("\n".join(summary(outcome)))
    print(f"outcome: {run.outcome_file}")
    return 0


def _score_batch(args: argparse.Namespace) -> int:
    from exdd.pipeline.nightly import open_run, score_images

    run = open_run(args.params, args.line, _run_id(args))
    scored = score_images(run, collect_images(args.inputs))
    if scored.scores_dir is None:
        print(f"nothing scored: {scored.reason}")
        return 1
    print(f"{scored.n_scored} image(s) scored by champion v{scored.model_version}, "
          f"{scored.n_flagged} flagged: {run.workspace / scored.scores_dir}")
    return report_unreadable(scored.unreadable)


def _outcomes(args: argparse.Namespace) -> int:
    from exdd.line.lines import open_line
    from exdd.line.review.queue import list_outcomes
    from exdd.pipeline.nightly import summary
    from exdd.line.outcome import Outcome

    line = open_line(args.params, args.line)
    outcomes = list_outcomes(line.workspace, line.params.review)
    for outcome in reversed(outcomes[: args.last]):
        print(json.dumps(outcome, sort_keys=True) if args.json else
              "\n".join(summary(Outcome.from_json(outcome, f"run {outcome.get('run_id')}"))))
    return 0 if outcomes else 1


LINE_FIELDS = ("name", "workspace", "pool", "schedule", "queue")


def _lines(args: argparse.Namespace) -> int:
    from exdd.config import load_params
    from exdd.line.lines import platform_file

    source = platform_file(args.params)
    lines = [line for line in load_params(source).lines if args.line in (None, line.name)]
    if not lines:
        raise ConfigError(f"{source}: no line {args.line!r}" if args.line else
                          f"{source}: no lines configured")
    for line in lines:
        values = {"name": line.name, "workspace": str(line.workspace_path(source.parent)),
                  "pool": line.repo_pool, "schedule": line.schedule or "manual",
                  "queue": line.queue}
        print(values[args.field] if args.field else "  ".join(values[f] for f in LINE_FIELDS))
    return 0


def _drop_demo(args: argparse.Namespace) -> int:
    import tempfile

    from exdd.data.readers import load_samples
    from exdd.data.demo import make_demo
    from exdd.pipeline.nightly import open_run
    from exdd.storage import is_s3_uri
    from exdd.line.workspace import drop_into_inbox

    run = open_run(args.params, args.line, "drop-demo")
    if is_s3_uri(run.line.inbox):
        raise ConfigError(f"line {args.line}: inbox {run.line.inbox} is on S3; drop-demo "
                          "writes local inbox folders only")
    with tempfile.TemporaryDirectory(prefix="exdd-demo-") as tmp:
        demo = make_demo(Path(tmp) / "demo", run.params.demo, args.seed,
                         run.params.synth.procedural)
        night = load_samples(demo, "train")
        inbox = drop_into_inbox(night, run.path(run.line.inbox), run.params.intake)
    print(f"{len(night)} new demo image(s) (seed {args.seed}) dropped into {inbox}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add nightly, score-batch and outcomes."""
    nightly = sub.add_parser("nightly", help="run a line's nightly pipeline without Airflow")
    line_arguments(nightly)
    nightly.add_argument("--run-id", help="run id (default: cli__<UTC time>); the same id "
                                          "repeats that run without duplicating anything")
    nightly.set_defaults(func=_nightly)

    batch = sub.add_parser("score-batch", help="score images with the line's champion into "
                                                "the review folder")
    line_arguments(batch)
    batch.add_argument("--run-id", help="review folder name (default: batch__<UTC time>)")
    batch.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR")
    batch.set_defaults(func=_score_batch)

    outcomes = sub.add_parser("outcomes", help="the latest nightly run outcomes of a line")
    line_arguments(outcomes)
    outcomes.add_argument("--last", type=int, default=1, help="how many runs (newest last)")
    outcomes.add_argument("--json", action="store_true",
                          help="print the outcomes as JSON, one object per line")
    outcomes.set_defaults(func=_outcomes)

    lines = sub.add_parser("lines", help="the configured production lines (one per row)")
    lines.add_argument("--line", help="only this line")
    lines.add_argument("--field", choices=LINE_FIELDS, help="print only this field")
    params_argument(lines)
    lines.set_defaults(func=_lines)

    drop = sub.add_parser("drop-demo", help="generate a night of demo images into a line's "
                                             "inbox (with their labels sidecar)")
    line_arguments(drop)
    drop.add_argument("--seed", type=int, required=True, help="demo seed (a new night: a new seed)")
    drop.set_defaults(func=_drop_demo)
