"""``exdd gate | publish | rollback | unpin | models | curves | workspace init|sync``: model
lifecycle.

Each command works on a line workspace (``--repo``, default the current folder) and its
params.yaml (``--params`` names another); ``--line`` picks the line. The library modules are
imported inside the handlers: MLflow and DVC cost seconds to import.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timezone
from pathlib import Path

from exdd.config import Params
from exdd.errors import ConfigError
from exdd.line.lines import workspace_params

WIDE = 160  # table width when stdout is not a terminal


def _context(args: argparse.Namespace) -> tuple[Params, Path]:
    repo = Path(args.repo).resolve()
    if not repo.is_dir():
        raise ConfigError(f"{repo}: no such line workspace (--repo)")
    params = workspace_params(repo, args.params)
    if args.line:
        params.publish.line = args.line
    return params, repo


def _gate(args: argparse.Namespace) -> int:
    from exdd.line.gate import run_gate

    params, repo = _context(args)
    benchmark = Path(args.benchmark) if args.benchmark else repo / params.gate.benchmark
    decision = run_gate(Path(args.candidate), benchmark, params, repo)
    for reason in decision.reasons:
        print(f"  {reason}")
    verdict = "PASSED" if decision.passed else f"FAILED (registered as version " \
                                                f"{decision.rejected_version}, alias rejected)"
    print(f"gate {verdict}: model {decision.model_hash[:12]}, decision in "
          f"{Path(args.candidate) / 'gate.json'}")
    return 0 if decision.passed else 1


def _publish(args: argparse.Namespace) -> int:
    from exdd.line.publish import publish

    params, repo = _context(args)
    done = publish(Path(args.model), params, repo)
    print(f"published {done.tag}: version {done.version}, model {done.model_hash[:12]}, "
          "alias champion")
    return 0


def _rollback(args: argparse.Namespace) -> int:
    from exdd.line.audit import current_user
    from exdd.line.rollback import rollback

    params, repo = _context(args)
    done = rollback(args.to, params, repo, args.reason, args.who or current_user())
    if not done.changed:
        print(f"{done.tag} (version {done.version}) is the champion already: nothing rolled "
              f"back; line {params.publish.line} is pinned to it")
        return 0
    print(f"rolled back: {done.tag} (version {done.version}, model {done.model_hash[:12]}) "
          f"is the champion again; line {params.publish.line} is pinned to it until "
          "`exdd unpin`")
    return 0


def _unpin(args: argparse.Namespace) -> int:
    from exdd.line.champion import unpin
    from exdd.line.audit import current_user

    params, repo = _context(args)
    pin = unpin(params, repo, args.who or current_user(), args.reason)
    print(f"line {params.publish.line} unpinned (was pinned to v{pin.version} by {pin.who}): "
          "nightly runs publish candidates that pass the gate again")
    return 0


def _models(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from exdd.line.champion import read_pin
    from exdd.line.registry import (
        TAG_GATE, TAG_GIT, TAG_HASH, Registry, redact, registry_exists, tracking_uri,
    )

    params, repo = _context(args)
    uri = tracking_uri(params.publish, repo)
    if not registry_exists(uri):
        print(f"no model registered for line {params.publish.line} yet (no registry at "
              f"{redact(uri)})")
        return 0
    registry = Registry(params, repo)
    pin = read_pin(registry)
    by_version: dict[int, list[str]] = {}
    for alias, version in registry.aliases().items():
        by_version.setdefault(version, []).append(alias)
    table = Table(title=f"{registry.name} ({redact(registry.uri)})")
    for column in ("version", "alias", "git tag", "image AUROC", "pixel AUROC", "gate",
                   "model", "registered (UTC)"):
        table.add_column(column, no_wrap=True)
    for v in registry.versions():
        aliases = sorted(by_version.get(int(v.version), []))
        gate = {"true": "passed", "false": "failed"}.get(v.tags.get(TAG_GATE, ""), "?")
        created = datetime.fromtimestamp(v.creation_timestamp / 1000, timezone.utc)
        table.add_row(
            str(v.version), ", ".join(aliases), v.tags.get(TAG_GIT, ""),
            _figure(v.tags.get("image_auroc")), _figure(v.tags.get("pixel_auroc")), gate,
            v.tags.get(TAG_HASH, "")[:12], created.strftime("%Y-%m-%d %H:%M"),
            style="bold green" if "champion" in aliases else None,
        )
    # A pipe or a log gets the whole table, not one cut to 80 columns.
    console = Console(width=None if sys.stdout.isatty() else WIDE)
    console.print(table)
    if pin is not None:
        console.print(f"line {params.publish.line} is {pin.describe()}", style="bold yellow",
                      markup=False)
    return 0


def _workspace_sync(args: argparse.Namespace) -> int:
    from exdd.line.workspace import sync_stages

    changed = sync_stages(Path(args.dir))
    print(f"{Path(args.dir) / 'dvc.yaml'}: " + ("regenerated from the pipeline's stages and "
                                               "committed" if changed else "up to date"))
    return 0


def _figure(text: str | None) -> str:
    return f"{float(text):.4f}" if text else ""


def _workspace_init(args: argparse.Namespace) -> int:
    from exdd.line.workspace import init_workspace

    ws = init_workspace(Path(args.dir), args.params, args.remote, demo=not args.no_demo)
    print(f"workspace ready in {ws.root}: run `dvc repro` there, then `exdd gate` and "
          "`exdd publish`")
    return 0


def _curves(args: argparse.Namespace) -> int:
    from exdd.evaluation.curves import write_curves
    from exdd.evaluation.report import MetricsReport

    metrics = MetricsReport.read(args.metrics).to_json()
    for path in write_curves(metrics, Path(args.out)):
        print(f"wrote {path}")
    return 0


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params",
                        help="params file to use (default: the workspace's params.yaml)")
    parser.add_argument("--line", help="line name (default: publish.line of the params)")
    parser.add_argument("--repo", default=".", help="line workspace (git + DVC repository)")


def register(sub: argparse._SubParsersAction) -> None:
    """Add gate, publish, rollback, unpin, models, curves and workspace."""
    gate = sub.add_parser("gate", help="promotion gate: thresholds and no regression vs champion")
    gate.add_argument("--candidate", required=True, metavar="MODEL_DIR")
    gate.add_argument("--benchmark", help="benchmark data set (default: gate.benchmark)")
    _common(gate)
    gate.set_defaults(func=_gate)

    pub = sub.add_parser("publish", help="push, tag, register and make a gated model champion")
    pub.add_argument("--model", required=True, metavar="MODEL_DIR")
    _common(pub)
    pub.set_defaults(func=_publish)

    back = sub.add_parser("rollback", help="make an earlier published version the champion")
    back.add_argument("--to", required=True, metavar="TAG_OR_VERSION",
                      help="model-<line>-v<N>, v<N> or N")
    back.add_argument("--reason", required=True, help="why (goes to the audit log)")
    back.add_argument("--who", help="who decided (default: $EXDD_USER or the login name)")
    _common(back)
    back.set_defaults(func=_rollback)

    unpin = sub.add_parser("unpin", help="let nightly runs publish again after a rollback")
    unpin.add_argument("--reason", required=True, help="why (goes to the audit log)")
    unpin.add_argument("--who", help="who decided (default: $EXDD_USER or the login name)")
    _common(unpin)
    unpin.set_defaults(func=_unpin)

    models = sub.add_parser("models", help="registered versions, metrics, gate, champion")
    _common(models)
    models.set_defaults(func=_models)

    curves = sub.add_parser("curves", help="ROC / PR curves of a metrics.json as CSV (dvc plots)")
    curves.add_argument("--metrics", required=True, help="metrics.json written by exdd evaluate")
    curves.add_argument("--out", required=True, help="folder for roc.csv and pr.csv")
    curves.set_defaults(func=_curves)

    ws = sub.add_parser("workspace", help="line workspaces (git + DVC repositories)")
    ws_sub = ws.add_subparsers(dest="workspace_command", required=True)
    init = ws_sub.add_parser("init", help="create a workspace with the pipeline and demo data")
    init.add_argument("dir", metavar="DIR")
    init.add_argument("--remote", help="DVC remote URL (default: publish.dvc_remote_url)")
    init.add_argument("--params", help="params file to copy in (default: exdd's own)")
    init.add_argument("--no-demo", action="store_true", help="no demo inbox and benchmark")
    init.set_defaults(func=_workspace_init)
    sync = ws_sub.add_parser("sync", help="rewrite a workspace's dvc.yaml from the pipeline's "
                                          "stages (after an exdd upgrade) and commit it")
    sync.add_argument("dir", metavar="DIR")
    sync.set_defaults(func=_workspace_sync)
