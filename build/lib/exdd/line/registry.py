"""MLflow tracking and model registry for a line's models.

One registered model per line (``<prefix>-<line>``), one MLflow run per gated candidate
(params, metrics, ROC/PR plots, a heatmap-overlay grid, the gate decision and the model as
a self-contained pyfunc, see exdd.line.pyfunc), one model version per distinct model hash.
Versions are marked with aliases only, never stages: ``champion`` is the model in service,
``rejected`` the latest candidate the gate turned down. Any tracking URI works; a relative
sqlite path lives in the line workspace.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import mlflow
import numpy as np
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.tracking import is_tracking_uri_set

from exdd.config import Params, PublishConfig, expand_env
from exdd.errors import ExddError
from exdd.detector.modelio import META
from exdd.evaluation.report import METRICS_FILE, scalar_metrics
from exdd.line.pyfunc import MODEL_DIR_PATH, THRESHOLD_KEY, log_pyfunc
from exdd.inference.overlays import overlay_grid, plot_roc_pr
from exdd.line.workspace import scrub

CHAMPION = "champion"
REJECTED = "rejected"
# Version tags every consumer (gate, publish, ``exdd models``, dashboard) relies on.
TAG_HASH = "model_hash"
TAG_BENCHMARK = "benchmark_hash"
TAG_GATE = "gate_passed"
TAG_GIT = "git_tag"
SQLITE = "sqlite:///"
# Benchmark images, their anomaly maps and titles, for the overlay grid of a run.
Overlays = tuple[list[np.ndarray], list[np.ndarray], list[str]]


def model_name(params: Params) -> str:
    """The registered model name of the configured line."""
    return f"{params.publish.registered_model_prefix}-{params.publish.line}"


def tracking_uri(cfg: PublishConfig, repo: Path) -> str:
    """The tracking URI, a relative sqlite path or folder taken from the workspace, and
    ``${ENV_VAR}`` (a password) from the environment."""
    uri = expand_env(cfg.tracking_uri, "publish.tracking_uri")
    if uri.startswith(SQLITE) and not uri[len(SQLITE):].startswith("/"):
        return SQLITE + str((repo / uri[len(SQLITE):]).resolve())
    if "://" not in uri:
        return (repo / uri).resolve().as_uri()
    return uri


def registry_exists(uri: str) -> bool:
    """False for a sqlite registry whose file does not exist yet: looking must not create
    one (other stores: assumed to exist, their clients report what is wrong)."""
    return not uri.startswith(SQLITE) or Path(uri[len(SQLITE):]).is_file()


def redact(uri: str, text: str | None = None) -> str:
    """``text`` (default: the URI itself) without the URI's user:password part."""
    text = uri if text is None else text
    userinfo, at, _ = urlsplit(uri).netloc.rpartition("@")
    return text.replace(f"{userinfo}@", "***@") if at else text


def _flatten(prefix: str, values: dict[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out.update(_flatten(f"{prefix}.{key}", value))
        else:
            out[f"{prefix}.{key}"] = json.dumps(value) if isinstance(value, list) else str(value)
    return out


@contextlib.contextmanager
def fluent_store(uri: str) -> Iterator[None]:
    """Point MLflow's fluent API (``start_run``, ``pyfunc.log_model``), which only knows the
    process-wide tracking URI, at ``uri`` for the block; the process's own setting (or its
    absence) is put back after, so a registry changes nothing for the rest of the process."""
    before = mlflow.get_tracking_uri() if is_tracking_uri_set() else None
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before)


class Registry:
    """The MLflow tracking server and model registry of one line."""

    def __init__(self, params: Params, repo: Path) -> None:
        self.params = params
        self.repo = Path(repo).resolve()
        self.name = model_name(params)
        self.uri = tracking_uri(params.publish, self.repo)
        self.client = MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)

    def _fail(self, what: str, err: Exception) -> ExddError:
        """One line naming the store and the step; no credentials (URI or environment)."""
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return ExddError(scrub(redact(self.uri, f"MLflow at {self.uri}: {what} failed: {first}")))

    # ------------------------------------------------------------------ runs
    def experiment_id(self) -> str:
        exp = self.client.get_experiment_by_name(self.name)
        if exp is not None:
            return exp.experiment_id
        location = (self.repo / self.params.publish.artifact_location).resolve().as_uri()
        is_local = self.uri.startswith(SQLITE) or self.uri.startswith("file:")
        return self.client.create_experiment(self.name, location if is_local else None)

    def log_candidate(self, model_dir: Path, metrics: dict[str, Any], decision: dict[str, Any],
                      overlays: Overlays) -> tuple[str, str]:
        """One run for a gated candidate; returns (run id, model URI of its pyfunc)."""
        try:
            return self._log_candidate(model_dir, metrics, decision, overlays)
        except ExddError:
            raise
        except Exception as err:  # noqa: BLE001 - any MLflow/store failure is one clear error
            raise self._fail("logging the candidate run", err) from err

    def _log_candidate(self, model_dir: Path, metrics: dict[str, Any], decision: dict[str, Any],
                       overlays: Overlays) -> tuple[str, str]:
        meta = json.loads((model_dir / META).read_text())
        line = self.params.publish.line
        with tempfile.TemporaryDirectory(prefix="exdd-mlflow-") as tmp:
            work = Path(tmp)
            plot_roc_pr(metrics, work / "roc_pr.png")
            overlay_grid(*overlays, work / "overlays.png")
            run_name = f"{line}-{decision['model_hash'][:12]}"
            experiment = self.experiment_id()
            with fluent_store(self.uri), mlflow.start_run(experiment_id=experiment,
                                                          run_name=run_name) as run:
                mlflow.log_params({
                    **_flatten("model", meta["model"]), **_flatten("data", meta["data"]),
                    **_flatten("data_hash", meta.get("data_hashes", {})),
                    **_flatten("gate", self.params.gate.model_dump()),
                })
                mlflow.log_metrics(scalar_metrics(metrics))
                mlflow.log_artifact(str(work / "roc_pr.png"), "plots")
                mlflow.log_artifact(str(work / "overlays.png"), "plots")
                mlflow.log_dict(metrics, METRICS_FILE)
                mlflow.log_dict(decision, "gate.json")
                mlflow.set_tags({
                    "exdd.line": line,
                    f"exdd.{TAG_HASH}": decision["model_hash"],
                    f"exdd.{TAG_BENCHMARK}": decision["benchmark_hash"],
                    f"exdd.{TAG_GATE}": str(decision["passed"]).lower(),
                    "exdd.gate_reasons": "; ".join(decision["reasons"]),
                })
                model_uri = log_pyfunc(model_dir, float(metrics[THRESHOLD_KEY]), overlays[0][0])
        return run.info.run_id, model_uri

    # ------------------------------------------------------------------ versions
    def version_of(self, model_hash: str) -> Any | None:
        """The model version holding this model hash, if any."""
        try:
            found = self.client.search_model_versions(
                f"name='{self.name}' and tag.{TAG_HASH}='{model_hash}'")
        except Exception as err:  # noqa: BLE001
            if "RESOURCE_DOES_NOT_EXIST" in str(err):
                return None
            raise self._fail("searching model versions", err) from err
        return min(found, key=lambda v: int(v.version)) if found else None

    def register(self, model_uri: str, run_id: str, model_hash: str,
                 tags: dict[str, str]) -> int:
        """The version for ``model_hash``: the existing one, else a new one (idempotent)."""
        existing = self.version_of(model_hash)
        try:
            if existing is None:
                self._ensure_registered_model()
                with fluent_store(self.uri):  # a ``models:/m-...`` source resolves through it
                    version = self.client.create_model_version(
                        self.name, model_uri, run_id=run_id, tags={TAG_HASH: model_hash, **tags})
                return int(version.version)
        except Exception as err:  # noqa: BLE001
            raise self._fail(f"registering {self.name}", err) from err
        self.tag_version(int(existing.version), tags)
        return int(existing.version)

    def tag_version(self, version: int, tags: dict[str, str]) -> None:
        try:
            for key, value in tags.items():
                self.client.set_model_version_tag(self.name, str(version), key, value)
        except Exception as err:  # noqa: BLE001
            raise self._fail(f"tagging version {version}", err) from err

    def _ensure_registered_model(self) -> None:
        try:
            self.client.get_registered_model(self.name)
        except MlflowException:
            self.client.create_registered_model(
                self.name, description=f"ExDD detector of line {self.params.publish.line}")

    def set_alias(self, alias: str, version: int) -> None:
        """Point ``alias`` at ``version`` (the last, atomic step of a promotion)."""
        try:
            self.client.set_registered_model_alias(self.name, alias, str(version))
        except Exception as err:  # noqa: BLE001
            raise self._fail(f"moving alias {alias!r} to version {version}", err) from err

    def clear_alias(self, alias: str, version: int) -> None:
        """Remove ``alias`` if it points at ``version`` (a rejected model later promoted)."""
        current = self.alias(alias)
        if current is not None and int(current.version) == version:
            try:
                self.client.delete_registered_model_alias(self.name, alias)
            except Exception as err:  # noqa: BLE001
                raise self._fail(f"removing alias {alias!r}", err) from err

    def alias(self, alias: str) -> Any | None:
        """The version an alias points at, or None (also when nothing is registered yet)."""
        try:
            return self.client.get_model_version_by_alias(self.name, alias)
        except MlflowException as err:
            if err.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                return None
            raise self._fail(f"reading alias {alias!r}", err) from err
        except Exception as err:  # noqa: BLE001
            raise self._fail(f"reading alias {alias!r}", err) from err

    def _registered_model(self, what: str) -> Any | None:
        """The line's registered model, None before its first registration."""
        try:
            return self.client.get_registered_model(self.name)
        except MlflowException as err:
            if err.error_code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise self._fail(what, err) from err
        except Exception as err:  # noqa: BLE001
            raise self._fail(what, err) from err

    def aliases(self) -> dict[str, int]:
        """Alias -> version of the line's model ({} before the first registration)."""
        model = self._registered_model("reading aliases")
        return {} if model is None else {
            alias: int(version) for alias, version in model.aliases.items()}

    def model_tags(self) -> dict[str, str]:
        """Tags of the line's registered model ({} before the first registration)."""
        model = self._registered_model("reading model tags")
        return {} if model is None else dict(model.tags)

    def set_model_tag(self, key: str, value: str | None) -> None:
        """Set a tag of the line's registered model; ``None`` removes it (if it is there)."""
        if value is None and key not in self.model_tags():
            return
        try:
            if value is None:
                self.client.delete_registered_model_tag(self.name, key)
            else:
                self.client.set_registered_model_tag(self.name, key, value)
        except Exception as err:  # noqa: BLE001
            raise self._fail(f"setting model tag {key!r}", err) from err

    def versions(self) -> list[Any]:
        """All versions of the line's model, oldest first."""
        try:
            found = self.client.search_model_versions(f"name='{self.name}'")
        except Exception as err:  # noqa: BLE001
            raise self._fail("listing model versions", err) from err
        return sorted(found, key=lambda v: int(v.version))

    def download_model_dir(self, version: Any, dest: Path) -> Path:
        """The model directory logged with a version, copied to ``dest``."""
        try:
            # The storage location, resolved by this registry's own client: a ``models:/m-...``
            # source would be resolved through mlflow's process-global store instead.
            root = self.client.get_model_version_download_uri(self.name, str(version.version))
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=f"{root}/{MODEL_DIR_PATH}", dst_path=str(dest),
                tracking_uri=self.uri)
        except Exception as err:  # noqa: BLE001
            raise self._fail(f"downloading version {version.version}", err) from err
        return Path(local)
