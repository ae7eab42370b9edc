"""``exdd validate``: line-data intake with great-expectations (see ``exdd.intake``).

Exit 0 when the batch passed, 1 when too many files failed (the pipeline must stop before
training), 2 on bad input (an ``ExddError``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


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
    p.add_argument("--report", type=Path, default=None,
                   help="report folder (intake.json + data_docs/); "
                        "default DIR-reports/<batch> beside the data set")
    p.add_argument("--config", default=None,
                   help="params.yaml (default: $EXDD_PARAMS, else ./params.yaml)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run_validate)


def run_validate(args: argparse.Namespace) -> int:
    from exdd.config import load_params
    from exdd.intake import validate_inbox

    params = load_params(args.config)
    result = validate_inbox(args.inbox, args.dataset, args.report, params.intake, params.data)
    if result.n_total == 0 and not args.json:  # a quiet night, not a failed batch: exit 0
        print(f"no new data: the inbox {args.inbox} holds no files; nothing to validate")
        return 0
    if args.json:
        print(json.dumps(result.to_json(), indent=1))
    else:
        print(f"batch {result.batch}: {result.n_total} image(s), {result.n_accepted} accepted, "
              f"{result.n_quarantined} quarantined, {result.n_relabelled} label update(s) "
              f"({result.failed_fraction:.0%} failed, "
              f"limit {params.intake.max_failed_fraction:.0%})")
        print(f"report: {result.report_path}")
        for check in result.batch_failures:
            print(f"batch check failed: {check}")
        for key in result.kept_in_inbox:
            print(f"kept in inbox (changed during the run): {key}")
        for key in result.skipped_links:
            print(f"skipped, left in inbox (a symbolic link, never followed): {key}")
        print("PASSED" if result.passed else "FAILED: the batch must not be used for training")
    return 0 if result.passed or result.n_total == 0 else 1
