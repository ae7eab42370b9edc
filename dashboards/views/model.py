"""Model page: the champion (and the pin a rollback put on the line), every version with
its metrics and gate decision, ROC/PR plots, the publish/rollback audit log, the nightly
runs, and rollback with confirmation."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import streamlit as st

import ui
from exdd.line.champion import read_pin
from exdd.errors import ExddError
from exdd.evaluation.report import HEADLINE_METRICS
from exdd.line.registry import CHAMPION, REJECTED, TAG_GATE, TAG_GIT, TAG_HASH
from exdd.line.audit import read_audit
from exdd.line.review.queue import list_outcomes

CONFIRM_KEY = "exdd_confirm_rollback"
HEADLINE = HEADLINE_METRICS
OUTCOME_COLUMNS = ("run_id", "finished", "n_total", "n_accepted", "n_quarantined",
                   "champion_version", "new_champion")


def label(version: Any) -> str:
    tag = version.tags.get(TAG_GIT)
    return f"v{version.version}" + (f" ({tag})" if tag else "")


def history(ctx: ui.LineContext, versions: list[Any]) -> None:
    st.subheader("Versions")
    # Registry searches leave aliases out: ask for each alias the line uses.
    aliases: dict[int, list[str]] = {}
    for alias in (CHAMPION, REJECTED):
        holder = ui.registry(ctx).alias(alias)
        if holder is not None:
            aliases.setdefault(int(holder.version), []).append(alias)
    rows = []
    for v in reversed(versions):
        gate = {"true": "passed", "false": "failed"}.get(v.tags.get(TAG_GATE, ""), "?")
        rows.append({
            "version": int(v.version), "aliases": ", ".join(aliases.get(int(v.version), [])),
            "git tag": v.tags.get(TAG_GIT, ""), **ui.version_metrics(v), "gate": gate,
            "gate reasons": ui.gate_reasons(ctx, v), "model": v.tags.get(TAG_HASH, "")[:12],
            "registered": datetime.fromtimestamp(v.creation_timestamp / 1000, UTC)
            .strftime("%Y-%m-%d %H:%M"),
        })
    st.dataframe(rows, hide_index=True)


def plots(ctx: ui.LineContext, versions: list[Any], champion: Any) -> None:
    st.subheader("ROC / PR on the benchmark")
    numbers = [v.version for v in reversed(versions)]
    chosen = st.selectbox("Version", numbers, index=numbers.index(champion.version),
                          key="plots_version", format_func=lambda n: f"v{n}")
    pictures = ui.version_plots(ctx, next(v for v in versions if v.version == chosen))
    if not pictures:
        st.caption("This version's run logged no plots.")
    for name, png in sorted(pictures, key=lambda p: "roc" not in p[0]):  # curves first
        st.image(png, caption=name)


def rollback_form(ctx: ui.LineContext, versions: list[Any], champion: Any) -> None:
    st.subheader("Roll back")
    targets = [v for v in reversed(versions)  # published ones: they carry their git tag
               if v.version != champion.version and v.tags.get(TAG_GIT)]
    if not targets:
        st.caption("No other published version to roll back to.")
        return
    by_number = {v.version: v for v in targets}
    target = st.selectbox("Make champion again", list(by_number), key="rollback_to",
                          format_func=lambda n: label(by_number[n]))
    reason = st.text_input("Reason (recorded in the audit log)", key="rollback_reason")
    if ctx.operator is None:
        st.warning("Enter your operator name in the sidebar to roll back.")
    if st.button("Roll back…", key="rollback", disabled=ctx.operator is None
                 or not reason.strip()):
        st.session_state[CONFIRM_KEY] = target
    if st.session_state.get(CONFIRM_KEY) not in (None, target):
        st.session_state.pop(CONFIRM_KEY)  # the choice changed: confirm again
    if st.session_state.get(CONFIRM_KEY) != target:
        return
    st.warning(f"Replace champion {label(champion)} of line {ctx.line.name} with "
               f"{label(by_number[target])}? Scoring uses it from the next run on.")
    yes, no = st.columns(2)
    if yes.button(f"Confirm rollback to v{target}", type="primary", key="rollback_confirm",
                  disabled=ctx.operator is None):
        from exdd.line.rollback import rollback

        try:
            done = rollback(str(target), ctx.params, ctx.workspace, reason.strip(),
                            ctx.operator or "")
        except ExddError as err:
            st.session_state.pop(CONFIRM_KEY, None)
            ui.fail(err)
        st.session_state.pop(CONFIRM_KEY, None)
        ui.flash(f"Rolled back: {done.tag} (v{done.version}) is the champion again; the line "
                 "is pinned to it until an operator unpins it.")
        st.rerun()
    if no.button("Cancel", key="rollback_cancel"):
        st.session_state.pop(CONFIRM_KEY, None)
        st.rerun()


def pin_panel(ctx: ui.LineContext, pin: Any) -> None:
    """The pin a rollback put on the line, and unpinning it (operator and reason needed)."""
    st.warning(f"Line {ctx.line.name} is {pin.describe()}.")
    reason = st.text_input("Reason for unpinning (recorded in the audit log)",
                           key="unpin_reason")
    if st.button("Unpin: let nightly runs publish again", key="unpin",
                 disabled=ctx.operator is None or not reason.strip()):
        from exdd.line.champion import unpin

        try:
            unpin(ctx.params, ctx.workspace, ctx.operator or "", reason.strip())
        except ExddError as err:
            ui.fail(err)
        ui.flash(f"Line {ctx.line.name} unpinned: candidates that pass the gate are "
                 "published again.")
        st.rerun()


def main() -> None:
    ctx = ui.context()
    st.title(f"Model · line {ctx.line.name}")
    ui.flash()
    try:
        champion = ui.champion(ctx)
        versions = ui.registry(ctx).versions() if champion is not None else []
        pin = read_pin(ui.registry(ctx)) if champion is not None else None
        audit = read_audit(ctx.workspace, ctx.params)
        outcomes = list_outcomes(ctx.workspace, ctx.params.review)
    except ExddError as err:
        ui.fail(err)
    if champion is None:
        st.info(f"No model is published for line {ctx.line.name} yet. The nightly run "
                "publishes one when a candidate passes the gate.")
        st.stop()
    figures = ui.version_metrics(champion)
    cols = st.columns(1 + len(HEADLINE))
    cols[0].metric("Champion", f"v{champion.version}")
    for col, key in zip(cols[1:], HEADLINE):
        col.metric(key.replace("_", " "), f"{figures[key]:.4f}" if key in figures else "–")
    st.caption(f"{label(champion)} · model {champion.tags.get(TAG_HASH, '?')[:12]}")
    if pin is not None:
        pin_panel(ctx, pin)
    history(ctx, versions)
    plots(ctx, versions, champion)
    st.subheader("Audit log")
    if audit:
        st.dataframe(audit, hide_index=True)
    else:
        st.caption("No entries yet.")
    st.subheader("Nightly runs")
    if outcomes:
        st.dataframe([{**{k: o.get(k) for k in OUTCOME_COLUMNS},
                       "gate": "; ".join((o.get("gate") or {}).get("reasons", []))}
                      for o in outcomes], hide_index=True)
    else:
        st.caption("No nightly run outcome yet.")
    rollback_form(ctx, versions, champion)


main()
