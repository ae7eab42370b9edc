"""A line workspace: one git + DVC repository holding a line's pipeline, data and models.

Every git and DVC operation runs as the ``git`` / ``dvc`` command in that repository, as
an operator would type it, so the repository stays usable by hand. Remote credentials
are never written or printed: DVC and boto3 read them from the environment, and command
errors are scrubbed of their values before they reach a message.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from exdd.config import IntakeConfig, Params, PublishConfig, load_params, params_yaml
from exdd.data.readers import Sample, load_samples
from exdd.errors import ConfigError, ExddError
from exdd.fsutil import write_text_atomic
from exdd.line.stages import DVC_YAML, dvc_yaml_text, write_dvc_yaml

# A new workspace's dvc.yaml comes from exdd.line.stages, its params.yaml from the defaults.
# The platform params' list of lines; a line workspace's own params.yaml leaves it out.
LINES_KEY = "lines"
# Used only when git has no identity configured (fresh CI machines, containers).
FALLBACK_IDENTITY = {"GIT_AUTHOR_NAME": "exdd", "GIT_AUTHOR_EMAIL": "exdd@localhost",
                     "GIT_COMMITTER_NAME": "exdd", "GIT_COMMITTER_EMAIL": "exdd@localhost"}
# Environment values that must never appear in an error message.
SECRET_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
              "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")
# Local state of the workspace that does not belong in git.
GITIGNORE = """\
# exdd line workspace: local state that git must not track
/mlruns.db
/mlartifacts/
/audit/
/data/inbox/
/data/staged/
/models/candidate/metrics.json
/models/candidate/gate.json
/reviews/verdicts.db
/reviews/export.lock
/reviews/masks/
/reports/
/reviews/scores/
"""


def default_params_text() -> str:
    """A new line's params.yaml from exdd's own defaults (no file of the source checkout,
    so a plain ``pip install`` can create workspaces), every setting described."""
    from exdd import __version__

    header = (f"# A line workspace's params: exdd {__version__}'s defaults, as `exdd params dump"
              "` prints them,\n# each with what it means. Read by the library and by DVC "
              "(dvc.yaml params); edit to tune\n# this line, then `dvc repro` or the next "
              "nightly run rebuilds what depends on it.\n")
    return header + line_params_text(params_yaml(Params(), described=True))


def scrub(text: str) -> str:
    """Replace the values of credential environment variables with ``***``."""
    for name in SECRET_ENV:
        value = os.environ.get(name)
        if value:
            text = text.replace(value, "***")
    return text


@dataclass(frozen=True)
class GitTag:
    """An annotated tag: its name, the commit it points to, its message."""

    name: str
    commit: str
    message: str


class Workspace:
    """A git + DVC repository; methods are thin, checked wrappers around the two tools."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        self._identity: dict[str, str] | None = None

    def path(self, relative: str | Path) -> Path:
        """A workspace-relative path (absolute paths pass through)."""
        return self.root / relative

    # ------------------------------------------------------------------ commands
    def run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run ``tool args`` in the workspace; a failure raises ExddError with its last line."""
        if not self.root.is_dir():
            raise ConfigError(f"{self.root}: workspace folder does not exist")
        proc = subprocess.run([tool, *args], cwd=self.root, capture_output=True, text=True,
                              env=self._env())
        if check and proc.returncode != 0:
            lines = [ln.strip() for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
            errors = [ln for ln in lines if "ERROR" in ln] or lines or [""]
            last = errors[-1]
            raise ExddError(scrub(f"{tool} {args[0]} failed in {self.root}: {last}"))
        return proc

    def git(self, *args: str, check: bool = True) -> str:
        return self.run("git", *args, check=check).stdout.strip()

    def dvc(self, *args: str, check: bool = True) -> str:
        return self.run("dvc", *args, check=check).stdout.strip()

    def _env(self) -> dict[str, str]:
        """The environment, plus a git identity where git has none of its own."""
        if self._identity is None:
            probe = subprocess.run(["git", "config", "user.email"], cwd=self.root,
                                   capture_output=True, text=True)
            self._identity = {} if probe.stdout.strip() else FALLBACK_IDENTITY
        return {**os.environ, **self._identity}

    # ------------------------------------------------------------------ git state
    def head(self) -> str | None:
        """The current commit, or None in a repository without commits."""
        out = self.run("git", "rev-parse", "--verify", "-q", "HEAD", check=False)
        return out.stdout.strip() or None

    def show(self, ref: str, path: str) -> str | None:
        """Text of ``path`` at ``ref``, or None when it is not there."""
        out = self.run("git", "show", f"{ref}:{path}", check=False)
        return out.stdout if out.returncode == 0 else None

    def tags(self, pattern: str) -> list[GitTag]:
        """Annotated tags matching a glob, oldest first."""
        sep = "\x1f"
        out = self.git("for-each-ref", "--sort=creatordate", f"refs/tags/{pattern}",
                       f"--format=%(refname:short){sep}%(*objectname){sep}%(contents)%00")
        tags = []
        for record in filter(None, (r.strip("\n") for r in out.split("\x00"))):
            name, commit, message = record.split(sep, 2)
            tags.append(GitTag(name, commit, message))
        return tags

    def commit(self, message: str, paths: Sequence[str]) -> str:
        """Stage ``paths`` (those that exist or are tracked) and commit; returns the commit."""
        present = [p for p in paths if self.path(p).exists() or self._tracked(p)]
        self.git("add", "--all", "--", *present)
        self.git("commit", "--allow-empty", "-q", "-m", message, "--", *present)
        return self.git("rev-parse", "HEAD")

    def tag(self, name: str, message: str) -> None:
        """Annotated tag on HEAD."""
        self.git("tag", "-a", name, "-m", message)

    def _tracked(self, path: str) -> bool:
        return bool(self.git("ls-files", "--", path))

    # ------------------------------------------------------------------ DVC
    def configure_remote(self, cfg: PublishConfig, url: str | None = None) -> None:
        """Make ``cfg.dvc_remote`` the default remote (a folder, or S3 with an endpoint URL)."""
        url = url or cfg.dvc_remote_url
        self.dvc("remote", "add", "--force", "--default", cfg.dvc_remote, url)
        if cfg.s3_endpoint_url:
            self.dvc("remote", "modify", cfg.dvc_remote, "endpointurl", cfg.s3_endpoint_url)

    def add(self, path: str) -> str:
        """``dvc add``: cache ``path`` and write its ``.dvc`` file; returns that file's path."""
        self.dvc("add", path)
        return f"{path}.dvc"

    def push(self, targets: Sequence[str], remote: str) -> None:
        self.dvc("push", "-r", remote, *targets)

    def restore(self, dvc_file: str, remote: str) -> None:
        """Check out a ``.dvc`` file's data from the cache, pulling what the cache lacks."""
        checkout = self.run("dvc", "checkout", "--force", dvc_file, check=False)
        if checkout.returncode != 0:
            self.dvc("pull", "--force", "-r", remote, dvc_file)

    # ------------------------------------------------------------------ transactions
    @contextlib.contextmanager
    def transaction(self, dvc_files: Sequence[str], remote: str) -> Iterator["Transaction"]:
        """All-or-nothing local changes: on error, HEAD, the given ``.dvc`` files, their
        data and any tag made through the transaction return to their state at entry."""
        txn = Transaction(self.head(), {f: self._read(f) for f in dvc_files})
        try:
            yield txn
        except BaseException:
            self._undo(txn, remote)
            raise

    def _read(self, relative: str) -> str | None:
        p = self.path(relative)
        return p.read_text() if p.is_file() else None

    def _undo(self, txn: "Transaction", remote: str) -> None:
        for name in txn.tags:
            self.run("git", "tag", "-d", name, check=False)
        if txn.head is not None and self.head() != txn.head:
            self.run("git", "reset", "-q", "--soft", txn.head, check=False)
        for dvc_file, text in txn.files.items():
            data = self.path(dvc_file).with_suffix("")
            self.run("git", "reset", "-q", "--", dvc_file, check=False)
            if text is None:
                self.path(dvc_file).unlink(missing_ok=True)
                shutil.rmtree(data, ignore_errors=True)
                continue
            write_text_atomic(self.path(dvc_file), text)
            with contextlib.suppress(ExddError):
                self.restore(dvc_file, remote)


@dataclass
class Transaction:
    """What a transaction restores on error; ``tag`` through it so the tag is undone too."""

    head: str | None
    files: dict[str, str | None]
    tags: list[str] = field(default_factory=list)

    def tag(self, ws: Workspace, name: str, message: str) -> None:
        ws.tag(name, message)
        self.tags.append(name)


def line_params_text(text: str) -> str:
    """params.yaml for one line's workspace: the platform's, less its top-level ``lines``
    list (the scheduler's registry of workspaces, which DVC need not parse), comments kept."""
    out: list[str] = []
    skipping = False
    for row in text.splitlines(keepends=True):
        if row[:1] not in (" ", "\t", "-", "#", "\n", "\r", ""):
            skipping = row.split(":", 1)[0].strip() == LINES_KEY
        if not skipping:
            out.append(row)
    return "".join(out)


def drop_into_inbox(samples: Sequence[Sample], inbox: Path, cfg: IntakeConfig) -> Path:
    """Copy labelled samples into an inbox as a line delivers them: images, the masks of
    defects, and the labels sidecar (image, label, mask, split). Files keep their names;
    a name already taken (samples from several folders) gets a numbered prefix."""
    inbox.mkdir(parents=True, exist_ok=True)
    rows = io.StringIO()
    writer = csv.writer(rows, lineterminator="\n")
    writer.writerow(["image", "label", "mask", "split"])
    taken = {cfg.labels_file}

    def copy(src: Path) -> str:
        name = src.name if src.name not in taken else f"{len(taken):05d}_{src.name}"
        taken.add(name)
        shutil.copyfile(src, inbox / name)
        return name

    for s in samples:
        image = copy(s.image)
        mask = copy(s.mask) if s.label and s.mask is not None else ""
        writer.writerow([image, cfg.defect_label if s.label else cfg.default_label,
                         mask, s.split])
    write_text_atomic(inbox / cfg.labels_file, rows.getvalue())
    return inbox


def init_workspace(root: str | Path, params_file: str | Path | None = None,
                   remote_url: str | None = None, demo: bool = True) -> Workspace:
    """Create a line workspace: git + DVC, the pipeline, params, a remote and demo data.

    The demo data set's train split becomes the inbox the pipeline validates; its test
    split becomes the DVC-tracked benchmark the gate scores every candidate on.
    """
    from exdd.data.demo import make_demo

    ws = Workspace(root)
    if (ws.root / DVC_YAML).exists():
        raise ConfigError(f"{ws.root}: already holds a dvc.yaml; not overwriting a workspace")
    ws.root.mkdir(parents=True, exist_ok=True)
    text = Path(params_file).read_text() if params_file else default_params_text()
    params = load_params(params_file) if params_file else Params()
    if not (ws.root / ".git").exists():
        ws.git("init", "-q")
    if not (ws.root / ".dvc").exists():
        ws.dvc("init", "-q")
        # no usage reports from unattended nightly runs (DVC would phone home on every command)
        ws.dvc("config", "core.analytics", "false")
    write_dvc_yaml(ws.root)
    write_text_atomic(ws.root / "params.yaml", line_params_text(text))
    ignore = ws.root / ".gitignore"
    existing = ignore.read_text() if ignore.exists() else ""
    if GITIGNORE not in existing:
        write_text_atomic(ignore, existing + GITIGNORE)
    ws.configure_remote(params.publish, remote_url)
    tracked = [DVC_YAML, "params.yaml", ".gitignore", ".dvc/config", ".dvc/.gitignore",
               ".dvcignore"]
    if demo:
        staging = ws.root / "data" / ".demo"
        make_demo(staging, params.demo, defects=params.synth.procedural)
        drop_into_inbox(load_samples(staging, "train"), ws.root / "data" / "inbox", params.intake)
        benchmark = ws.path(params.gate.benchmark)
        benchmark.mkdir(parents=True, exist_ok=True)
        os.replace(staging / "test", benchmark / "test")
        shutil.rmtree(staging)
        dvc_file = ws.add(params.gate.benchmark)
        tracked += [dvc_file, str(Path(params.gate.benchmark).parent / ".gitignore")]
    ws.commit("exdd workspace: pipeline, params and benchmark", tracked)
    return ws


def sync_stages(root: str | Path) -> bool:
    """Rewrite a workspace's ``dvc.yaml`` from the pipeline's stage definition and commit
    it; False when it already was the generated one."""
    ws = Workspace(root)
    if not (ws.root / DVC_YAML).is_file():
        raise ConfigError(f"{ws.root}: no dvc.yaml; not a line workspace "
                          "(create one with `exdd workspace init`)")
    if ws.path(DVC_YAML).read_text() == dvc_yaml_text():
        return False
    write_dvc_yaml(ws.root)
    ws.commit("exdd workspace: dvc.yaml regenerated from the pipeline's stages", [DVC_YAML])
    return True
