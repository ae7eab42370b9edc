"""Review queue: the line's latest scored images, most suspicious first; one verdict each.

Recording a verdict appends it to the verdict store and exports the definite ones into
the line's inbox, where the next nightly run validates and learns from them.
"""

from __future__ import annotations

import math

import numpy as np
import streamlit as st

import ui
from exdd.errors import DataError, ExddError
from exdd.line.review.export import export_pending
from exdd.line.review.masks import mask_from_map, mask_from_upload, new_mask_path, save_mask
from exdd.line.review.queue import (
    STATUSES,
    UNREVIEWED,
    ScoredImage,
    count_flagged,
    default_threshold,
    filter_queue,
    is_flagged,
    judged_threshold,
    load_queue,
    model_versions,
)
from exdd.line.review.verdicts import VERDICTS, VerdictStore

MASK_MODES = ("no mask", "heatmap region", "upload a drawn mask")
FORM_KEYS = ("verdict", "note", "mask_mode", "mask_level", "mask_upload")
NEXT_KEY = "exdd_next_image"
SLIDER_STEPS = 200
THRESHOLD_MODES = ("each model's own", "one for all models")


def form_key(name: str, item: ScoredImage) -> str:
    """Verdict widgets belong to one image, so a half-filled form never follows the
    operator to the next image."""
    return f"{name}:{item.image}"


def threshold_override(items: list[ScoredImage], start: float | None) -> float | None:
    """None: every image is judged by the threshold of the model that scored it (what the
    nightly runs flagged); else the one threshold the operator slides to, for all."""
    mode = st.radio("Decision threshold", THRESHOLD_MODES, horizontal=True,
                    key="threshold_mode",
                    help="scores of different model versions are not on one scale: by "
                         "default each row is judged by its own model's threshold")
    if mode == THRESHOLD_MODES[0]:
        return None
    scores = [i.score for i in items]
    lo, hi = min(scores), max(scores)
    start = (lo + hi) / 2 if start is None else start
    lo, hi = min(lo, start), max(hi, start)
    if hi <= lo:
        hi = lo + 1.0
    return st.slider("Threshold for all models", lo, hi, float(start),
                     step=(hi - lo) / SLIDER_STEPS, format="%.4f", key="threshold",
                     help="score >= threshold is flagged; counts follow live")


def _decision(flagged: bool | None) -> str:
    return {True: "flagged", False: "not flagged", None: "no threshold known"}[flagged]


def choose_mask(ctx: ui.LineContext, item: ScoredImage) -> np.ndarray | None:
    """The defect mask the operator accepts (heatmap region or drawn file), or None."""
    mode = st.radio("Mask", MASK_MODES, horizontal=True, key=form_key("mask_mode", item))
    mask = None
    try:
        if mode == MASK_MODES[1]:
            if item.map_path is None or not item.map_path.is_file():
                st.warning("This image has no stored anomaly map to take a region from "
                           "(scored before maps were stored): draw and upload a mask.")
                return None
            level = st.slider("Heatmap level", 0.05, 0.95, ctx.params.review.mask_level,
                              step=0.05, key=form_key("mask_level", item),
                              help="share of the heatmap's colour scale; above is defect")
            mask = mask_from_map(item.map_path, item.map_scale, item.image_path, level)
        elif mode == MASK_MODES[2]:
            upload = st.file_uploader("Drawn mask: PNG of the image's size, white = defect",
                                      type=["png"], key=form_key("mask_upload", item))
            if upload is not None:
                mask = mask_from_upload(upload.getvalue(), item.image_path,
                                        ctx.params.data.mask_threshold, upload.name)
    except DataError as err:
        st.error(str(err))
        return None
    if mask is not None:
        st.image(ui.mask_preview(item.image_path, mask), width="stretch",
                 caption=f"mask: {mask.mean():.1%} of the image")
        if not mask.any():
            st.warning("The mask is empty: lower the level or draw a region.")
            return None
    return mask


def record(ctx: ui.LineContext, store: VerdictStore, item: ScoredImage, verdict: str,
           note: str, mask: np.ndarray | None, following: str | None) -> None:
    """Append the verdict, then export what is pending; an export failure keeps the verdict
    (it is exported with the next one)."""
    cfg = ctx.params.review
    mask_rel = None
    if mask is not None:
        mask_rel = new_mask_path(cfg, item.image)
        save_mask(mask, ctx.workspace / mask_rel)
    store.record(ctx.line.name, item.image, verdict, ctx.operator or "", note, mask_rel,
                 item.model_version)
    text = f"Recorded **{verdict}** for `{item.image}` as {ctx.operator}."
    try:
        result = export_pending(store, ctx.params, ctx.line, ctx.workspace)
    except ExddError as err:
        ui.flash(f"{text} Export to the inbox failed ({err}); it is retried with the next "
                 "verdict.", "warning")
    else:
        held = [f"{image} ({why})" for image, why in result.held if image == item.image]
        if result.exported:
            text += f" Exported to the inbox: {', '.join(result.exported)}."
        ui.flash(text + (f" Not exported: {'; '.join(held)}." if held else ""),
                 "warning" if held else "success")
    for key in FORM_KEYS:
        st.session_state.pop(form_key(key, item), None)
    if following is not None:
        st.session_state[NEXT_KEY] = following


def review_panel(ctx: ui.LineContext, store: VerdictStore, item: ScoredImage,
                 override: float | None, following: str | None) -> None:
    picture, heat, panel = st.columns(3)
    picture.image(str(item.image_path), caption=item.image, width="stretch")
    if item.overlay_path is not None and item.overlay_path.is_file():
        heat.image(str(item.overlay_path), caption="heatmap overlay", width="stretch")
    else:
        heat.info("No heatmap overlay for this image.")
    with panel:
        threshold = judged_threshold(item, override)
        shown = "?" if threshold is None else f"{threshold:.4f}"
        st.markdown(f"**score {item.score:.4f}** · threshold {shown} → "
                    f"**{_decision(is_flagged(item, override))}**  \n"
                    f"model v{item.model_version or '?'} · run `{item.run_id}`")
        for past in store.history(ctx.line.name, item.image):
            st.caption(f"{past.created_at:%Y-%m-%d %H:%M} UTC · {past.operator}: "
                       f"{past.verdict}" + (f" — {past.note}" if past.note else "")
                       + (" (with mask)" if past.mask_path else ""))
        verdict = st.radio("Verdict", VERDICTS, index=None, horizontal=True,
                           key=form_key("verdict", item))
        note = st.text_input("Note (optional)", key=form_key("note", item))
        mask = choose_mask(ctx, item) if verdict == "defect" else None
        if ctx.operator is None:
            st.warning("Enter your operator name in the sidebar to record verdicts.")
        if st.button("Record verdict", type="primary", key="record",
                     disabled=ctx.operator is None or verdict is None):
            try:
                record(ctx, store, item, verdict, note, mask, following)
            except ExddError as err:
                ui.fail(err)
            st.rerun()


def main() -> None:
    ctx = ui.context()
    cfg = ctx.params.review
    st.title(f"Review queue · line {ctx.line.name}")
    ui.flash()
    try:
        champion = ui.champion(ctx)
        items = load_queue(ctx.workspace, cfg, ctx.line.name)
        store = ui.store(ctx)
        statuses = {image: v.verdict for image, v in store.latest(ctx.line.name).items()}
    except ExddError as err:
        ui.fail(err)
    if champion is None:
        st.info(f"No model is published for line {ctx.line.name} yet: the queue fills once a "
                "nightly run publishes a champion and scores the line's images with it.")
    if not items:
        st.info("No scored images yet.")
        st.stop()

    dates = sorted({i.scored_at.date() for i in items})
    left, right = st.columns(2)
    period = left.date_input("Scored between", value=(dates[0], dates[-1]), key="period")
    wanted = right.multiselect("Status", STATUSES, default=[UNREVIEWED], key="statuses")
    period = tuple(period) if period else ()  # one date while the second is being picked
    since, until = (period[0], period[-1]) if period else (None, None)
    shown = filter_queue(items, statuses, wanted, since, until)

    champion_threshold = ui.version_metrics(champion).get("threshold") if champion else None
    override = threshold_override(items, default_threshold(items, cfg.threshold_source,
                                                           champion_threshold))
    versions = model_versions(items)
    a, b, c, d = st.columns(4)
    a.metric("Flagged (shown)", f"{count_flagged(shown, override)} / {len(shown)}")
    b.metric("Unreviewed (all)", sum(1 for i in items if i.image not in statuses))
    c.metric("Champion", f"v{champion.version}" if champion else "none")
    d.metric("Scored by", ", ".join(f"v{v}" if v else "?" for v in versions))
    if not shown:
        st.info("No image matches the filters.")
        st.stop()

    pages = math.ceil(len(shown) / cfg.page_size)
    page = st.number_input("Page", 1, pages, key="page") if pages > 1 else 1
    rows = shown[(page - 1) * cfg.page_size: page * cfg.page_size]
    st.dataframe([{"score": i.score, "threshold": judged_threshold(i, override),
                   "flagged": is_flagged(i, override), "model": f"v{i.model_version or '?'}",
                   "status": statuses.get(i.image, UNREVIEWED),
                   "scored": i.scored_at.strftime("%Y-%m-%d %H:%M"), "run": i.run_id,
                   "image": i.image} for i in rows], hide_index=True, width="stretch")

    by_image = {i.image: i for i in rows}
    options = list(by_image)
    wanted_next = st.session_state.pop(NEXT_KEY, None)
    if wanted_next in by_image:
        st.session_state["selected"] = wanted_next
    if st.session_state.get("selected") not in by_image:
        st.session_state["selected"] = options[0]
    st.subheader("Review")
    chosen = st.selectbox("Image", options, key="selected",
                          format_func=lambda im: f"{by_image[im].score:.4f} · {im}")
    position = options.index(chosen)
    following = next((im for im in options[position + 1:] if im not in statuses), None)
    review_panel(ctx, store, by_image[chosen], override, following)


main()
