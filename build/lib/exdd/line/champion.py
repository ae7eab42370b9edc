"""The line's champion: which model is in service, loaded only as the registry recorded
it, and the pin a rollback puts on it.

Integrity: a model directory's ``checksums.json`` proves only that its files belong
together; whoever can write the folder can rewrite a bank and the checksums alike. What
ties a folder to the champion is the model hash (sha256 of ``checksums.json``) that the
MLflow version and its git tag recorded when the model was published, so the champion is
only ever loaded after its files were checked against that record.

Pin: a rollback is an operator's decision that the nightly gate must not undo. It pins
the line (a tag of the registered model, plus the audit log): while pinned, nights still
build, evaluate and gate their candidate, which is recorded in MLflow and the run's
outcome, but nothing is published until an operator unpins the line.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from exdd.config import Params
from exdd.errors import ConfigError, ModelError
from exdd.line.audit import append_audit
from exdd.detector.modelio import CHECKSUMS, model_hash, verify
from exdd.evaluation.report import MetricsReport
from exdd.line.registry import CHAMPION, TAG_HASH, Registry, registry_exists, tracking_uri

PIN_TAG = "exdd.pinned"  # registered-model tag: JSON of the Pin
MODELS_URI_RE = re.compile(r"models:/(?P<name>[^/@]+)(?:@(?P<alias>[\w-]+)|/(?P<version>\d+))")


@dataclass(frozen=True)
class LoadedModel:
    """A registered model version's verified files: where they are and what they are."""

    model_dir: Path
    version: int
    model_hash: str
    threshold: float | None


@dataclass(frozen=True)
class Pin:
    """Who pinned the line to which version, when and why."""

    version: int
    who: str
    reason: str
    at: str

    def describe(self) -> str:
        return (f"pinned to v{self.version} by {self.who} at {self.at} ({self.reason}); "
                "nightly runs do not publish until `exdd unpin`")


def check_recorded(model_dir: Path, expected: str | None, what: str) -> Path:
    """``model_dir`` when its files are intact and its model hash is the recorded one."""
    if not expected:
        raise ModelError(f"{what}: the registry records no model hash; cannot check it")
    verify(model_dir)
    actual = model_hash(model_dir)
    if actual != expected:
        raise ModelError(f"{model_dir}: model {actual[:12]} is not {what}, recorded as "
                         f"{expected[:12]}: refusing to load it (edited or replaced files)")
    return model_dir


def model_threshold(model_dir: Path, tags: Mapping[str, str] | None = None) -> float | None:
    """A model's F1-optimal threshold: its metrics.json, else its version's tag."""
    metrics = MetricsReport.beside(model_dir)
    threshold = metrics.threshold if metrics is not None else None
    if threshold is None and (tags or {}).get("threshold"):
        threshold = float((tags or {})["threshold"])
    return threshold


def load_version(registry: Registry, version: Any, scratch: Path, local: Path | None = None
                 ) -> LoadedModel:
    """A version's files, checked against its recorded model hash: ``local`` (the
    workspace's checked-out champion) when it holds any model, else the registry's copy."""
    expected = version.tags.get(TAG_HASH)
    what = f"{registry.name} v{version.version}"
    if local is not None and (local / CHECKSUMS).is_file():
        model_dir = check_recorded(local, expected, what)
    else:
        model_dir = check_recorded(registry.download_model_dir(version, scratch), expected, what)
    return LoadedModel(model_dir, int(version.version), expected, model_threshold(model_dir, version.tags))


def load_champion(params: Params, repo: Path, scratch: Path) -> LoadedModel | None:
    """The champion's verified files (None when there is none): the checked-out champion
    folder must hold exactly the registered champion, a mismatch is refused."""
    registry = Registry(params, repo)
    champion = registry.alias(CHAMPION)
    if champion is None:
        return None
    return load_version(registry, champion, scratch, Path(repo) / params.publish.champion_dir)


def is_models_uri(text: str) -> bool:
    return text.startswith("models:/")


def load_models_uri(uri: str, params: Params, repo: Path, scratch: Path) -> LoadedModel:
    """``models:/<prefix>-<line>@<alias>`` or ``models:/<prefix>-<line>/<version>`` of the
    workspace's registry, verified like the champion."""
    found = MODELS_URI_RE.fullmatch(uri)
    prefix = f"{params.publish.registered_model_prefix}-"
    if not found or not found["name"].startswith(prefix):
        raise ConfigError(f"{uri}: expected models:/{prefix}<line>@<alias> or "
                          f"models:/{prefix}<line>/<version>")
    if not registry_exists(tracking_uri(params.publish, Path(repo))):
        raise ConfigError(f"{uri}: no model registry in {repo} (--repo names the line "
                          "workspace)")
    line = found["name"][len(prefix):]
    params = params.model_copy(update={"publish": params.publish.model_copy(
        update={"line": line})})
    registry = Registry(params, repo)
    if found["alias"]:
        version = registry.alias(found["alias"])
    else:
        version = next((v for v in registry.versions() if str(v.version) == found["version"]),
                       None)
    if version is None:
        raise ConfigError(f"{uri}: no such model version in {registry.name} "
                          f"(registry {repo})")
    local = Path(repo) / params.publish.champion_dir if found["alias"] == CHAMPION else None
    return load_version(registry, version, scratch, local)


# --------------------------------------------------------------------------- pin


def read_pin(registry: Registry) -> Pin | None:
    """The line's pin, or None when nightly runs may publish."""
    text = registry.model_tags().get(PIN_TAG)
    if not text:
        return None
    try:
        return Pin(**json.loads(text))
    except (json.JSONDecodeError, TypeError) as err:
        raise ModelError(f"{registry.name}: tag {PIN_TAG} is not a pin ({err})") from None


def write_pin(registry: Registry, pin: Pin | None) -> None:
    """Set (or, with None, remove) the line's pin."""
    registry.set_model_tag(PIN_TAG, None if pin is None else json.dumps(asdict(pin)))


def refuse_if_pinned(registry: Registry, model: str) -> None:
    """Publishing ``model`` would replace a champion an operator pinned."""
    pin = read_pin(registry)
    if pin is not None:
        raise ModelError(f"line {registry.params.publish.line} is {pin.describe()}: model "
                         f"{model[:12]} is not published")


def unpin(params: Params, repo: Path, who: str, reason: str) -> Pin:
    """Let nightly runs publish again; the pin that was lifted goes to the audit log."""
    if not reason.strip():
        raise ConfigError("unpinning needs a reason (--reason)")
    registry = Registry(params, repo)
    pin = read_pin(registry)
    if pin is None:
        raise ConfigError(f"line {params.publish.line} is not pinned")
    write_pin(registry, None)
    append_audit(Path(repo), params, {"event": "unpin", "who": who, "reason": reason,
                                      "version": pin.version, "pinned_by": pin.who})
    return pin
