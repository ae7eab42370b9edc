"""``exdd validate`` and ``exdd quarantine list|release``: line-data intake (``exdd.line.intake``).

``validate`` exits 0 when the batch passed, 1 when it failed (the pipeline must stop before
training; the batch is held in quarantine), 2 on bad input (an ``ExddError``).
``quarantine`` works on a line's data set (``--line``, ``--params``): ``list`` shows what
is held and why, ``release`` re-validates held files through the same suite
(``exdd.line.intake.release``) and commits the data set's new state in the line's workspace.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from exdd.cli.common import line_arguments, run_stamp


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "validate", help="validate an inbox of new line images into a manifest data set",
        description="Validate every file in the inbox; accepted ones join the data set "
                    "(DIR/manifest.csv, images/, masks/), failed ones go to DIR/quarantine/ "
                    "with a JSON reason each. A labels row whose 'replaces' names a data-set "
                    "image with the same bytes updates that image's label and mask "
                    "(history in DIR/label_history.jsonl). Inbox: a folder or s3://bucket/prefix "
                    "(endpoint and credentials from the AWS_* environment variables).",
    )
    p.add_argument("--inbox", required=True, help="local folder or s3://bucket/prefix")
    p.add_argument("--dataset", required=True, type=Path, help="data set folder (DIR)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--report", type=Path, default=None,
                       help="report folder (intake.json + data_docs/); "
                            "default DIR-reports/<batch> beside the data set")
    where.add_argument("--reports", type=Path, default=None, metavar="ROOT",
                       help="report under ROOT/<run id>, as the nightly run files it "
                            "(the pipeline's validate stage)")
    p.add_argument("--run-id", help="with --reports: the run's folder name "
                                    "(default: validate__<UTC time>)")
    p.add_argument("--params", default=None,
                   help="params file (default: $EXDD_PARAMS, else ./params.yaml)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run_validate)

    q = sub.add_parser("quarantine", help="a line's quarantined files: list, or release "
                                          "(re-validated) after their cause is fixed")
    verbs = q.add_subparsers(dest="quarantine_command", required=True)
    show = verbs.add_parser("list", help="held files, their batch and the checks they broke")
    line_arguments(show)
    show.add_argument("--batch", help="only this batch")
    show.add_argument("--json", action="store_true", help="one JSON object per file")
    show.set_defaults(func=_list)
    rel = verbs.add_parser("release", help="re-validate held files through the intake suite; "
                                           "those that pass join the data set")
    line_arguments(rel)
    rel.add_argument("--batch", help="the quarantined batch (all its images)")
    rel.add_argument("--file", help="one image (its inbox name), with its mask")
    rel.add_argument("--reason", required=True, help="why (recorded with the release)")
    rel.add_argument("--who", help="who releases (default: $EXDD_USER or the login name)")
    rel.set_defaults(func=_release)


def run_validate(args: argparse.Namespace) -> int:
    from exdd.config import load_params
    from exdd.line.intake import validate_inbox

    params = load_params(args.params)
    report = args.report
    if args.reports is not None:
        report = args.reports / (args.run_id or f"validate__{run_stamp()}")
    result = validate_inbox(args.inbox, args.dataset, report, params.intake, params.data)
    if result.n_total == 0 and not args.json:  # a quiet night, not a failed batch: exit 0
        print(f"no new data: the inbox {args.inbox} holds no files; nothing to validate")
        return 0
    if args.json:
        print(json.dumps(result.to_json(), indent=1))
    else:
        held = f" ({result.n_held} held with the failed batch)" if result.n_held else ""
        print(f"batch {result.batch}: {result.n_total} image(s), {result.n_accepted} accepted, "
              f"{result.n_quarantined} quarantined{held}, {result.n_relabelled} label update(s) "
              f"({result.failed_fraction:.0%} failed, "
              f"limit {params.intake.max_failed_fraction:.0%})")
        print(f"report: {result.report_path}")
        for check in result.batch_failures:
            print(f"batch check failed: {check}")
        for event in result.drift:
            print(f"drift: {event['message']}")
        for key in result.kept_in_inbox:
            print(f"kept in inbox (changed during the run): {key}")
        for key in result.skipped_links:
            print(f"skipped, left in inbox (a symbolic link, never followed): {key}")
        print("PASSED" if result.passed else "FAILED: the batch must not be used for training")
    return 0 if result.passed or result.n_total == 0 else 1


def _list(args: argparse.Namespace) -> int:
    from exdd.line.intake.release import list_quarantine
    from exdd.pipeline.nightly import open_run

    run = open_run(args.params, args.line, "quarantine")
    held = list_quarantine(run.dataset, args.batch)
    for h in held:
        if args.json:
            print(json.dumps({"batch": h.batch, "file": h.key, "path": h.path,
                              "with_image": h.image, "checks": h.checks}, sort_keys=True))
        else:
            what = f"mask of {h.image}" if h.image else "; ".join(h.checks)
            print(f"{h.batch}  {h.key}  {what}")
    if not args.json:
        print(f"{len(held)} file(s) held in {run.dataset / 'quarantine'}")
    return 0


def _release(args: argparse.Namespace) -> int:
    from exdd.line.intake.release import release
    from exdd.pipeline.nightly import commit_lock, open_run, record_stages
    from exdd.line.audit import current_user

    run = open_run(args.params, args.line, f"release__{run_stamp()}")
    who = args.who or current_user()
    result, record = release(run.dataset, run.params.intake, run.params.data, args.reason,
                             who, args.batch, args.file, run.intake_report)
    record_stages(run, "validate")
    commit_lock(run, f"quarantine release {run.run_id} by {who}: {len(result.accepted)} "
                     f"accepted, {len(result.quarantined)} held again ({args.reason})")
    print(f"released {len(record['files'])} file(s) by {who}: {result.n_accepted} accepted, "
          f"{result.n_quarantined} quarantined again (batch {result.batch}); "
          f"report: {result.report_path}")
    return 0 if result.passed else 1
