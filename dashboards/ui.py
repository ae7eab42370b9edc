"""What every dashboard page shares: config, the chosen line, the operator, cached stores.

The champion is resolved from its alias on every rerun (one registry query) and only what
belongs to a fixed version (its gate reasons and plots) is cached, keyed by version, so a
promotion or a rollback shows up without restarting the server.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import streamlit as st
from PIL import Image

from exdd.config import LineConfig, Params, load_params
from exdd.errors import ConfigError, ExddError
from exdd.evaluation.report import SCALAR_METRICS
from exdd.line.lines import open_line, platform_file
from exdd.line.registry import CHAMPION, Registry, registry_exists, tracking_uri
from exdd.line.review.auth import AccessDenied, authorize
from exdd.line.review.verdicts import VerdictStore, store_url

CONTEXT_KEY = "exdd_context"
FLASH_KEY = "exdd_flash"
MASK_TINT = (255, 0, 0)
MASK_ALPHA = 0.45
PLOTS_ARTIFACT = "plots"  # run folder where exdd.line.registry logs its PNG plots
GATE_REASONS_TAG = "exdd.gate_reasons"  # run tag exdd.line.registry writes


@dataclass(frozen=True)
class LineContext:
    """The chosen line, its workspace and own params, and who is acting (None: nobody may
    act)."""

    params: Params
    line: LineConfig
    workspace: Path
    operator: str | None


def fail(err: Exception) -> NoReturn:
    st.error(str(err))
    st.stop()


def sidebar() -> LineContext:
    """Line picker and operator identity; the result is what the pages read.

    The dashboard's params file (``$EXDD_PARAMS`` or ./params.yaml) lists the lines and
    sets access control (``review.auth``); everything about one line, its review folders
    and verdict store included, comes from that line's workspace params.
    """
    try:
        source = platform_file()
        platform = load_params(source)
        if not platform.lines:
            raise ConfigError(f"{source}: no production line is configured (lines is empty)")
    except ExddError as err:
        fail(err)
    cfg = platform.review
    bar = st.sidebar
    name = bar.selectbox("Line", [line.name for line in platform.lines], key="line")
    bar.subheader("Operator")
    headers = dict(st.context.headers or {})
    if cfg.auth == "header":
        bar.caption(f"Identity from the proxy header {cfg.auth_header}.")
        typed, secret = "", None
    else:
        typed = bar.text_input("Operator name", key="operator",
                               help="required before any verdict or rollback")
        secret = bar.text_input("Access key", type="password",
                                key="access_key") if cfg.auth == "secret" else None
    try:
        operator: str | None = authorize(cfg, typed, headers, secret,
                                         peer=st.context.ip_address)
        bar.caption(f"Acting as **{operator}**")
    except AccessDenied as err:
        operator = None
        bar.warning(str(err))
    except ConfigError as err:
        operator = None
        bar.error(str(err))
    if operator is None and cfg.auth != "none":
        # Images, scores and models are the line's own: shown to signed-in operators only.
        st.info(f"Sign in (sidebar) to see line {name}'s images, scores and models.")
        st.stop()
    try:
        line = open_line(source, name)
        ctx = LineContext(line.params, line.config, line.workspace, operator)
    except ExddError as err:
        fail(err)
    st.session_state[CONTEXT_KEY] = ctx
    return ctx


def context() -> LineContext:
    return st.session_state[CONTEXT_KEY]


def flash(message: str | None = None, kind: str = "success") -> None:
    """Keep a message across the rerun an action triggers (with ``message``), or show it."""
    if message is not None:
        st.session_state[FLASH_KEY] = (kind, message)
    elif FLASH_KEY in st.session_state:
        shown, text = st.session_state.pop(FLASH_KEY)
        getattr(st, shown)(text)


@st.cache_resource(show_spinner=False)
def _store(url: str) -> VerdictStore:
    return VerdictStore(url)


def store(ctx: LineContext) -> VerdictStore:
    return _store(store_url(ctx.params.review, ctx.workspace))


@st.cache_resource(show_spinner=False)
def _registry(params_json: str, workspace: str) -> Registry:
    return Registry(Params.model_validate_json(params_json), Path(workspace))


def registry(ctx: LineContext) -> Registry:
    return _registry(ctx.params.model_dump_json(), str(ctx.workspace))


def champion(ctx: LineContext) -> Any | None:
    """The version the champion alias points at now (None when nothing is published).

    A line whose sqlite registry does not exist yet has published nothing; looking must
    not create one."""
    if not registry_exists(tracking_uri(ctx.params.publish, ctx.workspace)):
        return None
    return registry(ctx).alias(CHAMPION)


def version_metrics(version: Any) -> dict[str, float]:
    """The headline figures the gate recorded as tags of a version."""
    return {k: float(version.tags[k]) for k in SCALAR_METRICS if k in version.tags}


@st.cache_data(show_spinner=False)
def _gate_reasons(uri: str, name: str, version: str, run_id: str) -> str:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri).get_run(run_id).data.tags.get(
        GATE_REASONS_TAG, "") if run_id else ""


def gate_reasons(ctx: LineContext, version: Any) -> str:
    """Why the gate passed or failed a version (its run's tag; cached per version)."""
    reg = registry(ctx)
    return _gate_reasons(reg.uri, reg.name, str(version.version), version.run_id or "")


@st.cache_resource(show_spinner=False)
def _run_plots(uri: str, name: str, version: str, run_id: str) -> list[tuple[str, bytes]]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    if not run_id or not any(a.path == PLOTS_ARTIFACT for a in client.list_artifacts(run_id)):
        return []
    with tempfile.TemporaryDirectory(prefix="exdd-plots-") as tmp:
        folder = Path(client.download_artifacts(run_id, PLOTS_ARTIFACT, tmp))
        return [(p.name, p.read_bytes()) for p in sorted(folder.glob("*.png"))]


def version_plots(ctx: LineContext, version: Any) -> list[tuple[str, bytes]]:
    """The PNG plots (ROC/PR, overlay grid) logged with a version's run (cached per version)."""
    reg = registry(ctx)
    return _run_plots(reg.uri, reg.name, str(version.version), version.run_id or "")


def mask_preview(image_path: Path, mask: np.ndarray) -> np.ndarray:
    """The image with the mask tinted over it, for the operator to check before saving."""
    image = np.asarray(Image.open(image_path).convert("RGB"), dtype=np.float32)
    tint = np.asarray(MASK_TINT, dtype=np.float32)
    image[mask] = (1 - MASK_ALPHA) * image[mask] + MASK_ALPHA * tint
    return image.astype(np.uint8)
