"""exdd.line.review: queue loading, the append-only verdict store, masks, inbox export, access."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from exdd.config import LineConfig, Params, params_from_dict
from exdd.errors import ConfigError, DataError
from exdd.inference.batch import read_map, save_map
from exdd.inference.overlays import save_overlay
from exdd.line.review.auth import AccessDenied, authorize
from exdd.line.review.export import export_pending
from exdd.line.review.masks import mask_from_map, mask_from_upload, new_mask_path, save_mask
from exdd.line.review.queue import (
    count_flagged,
    default_threshold,
    filter_queue,
    is_flagged,
    load_queue,
    model_versions,
)
from exdd.line.review.verdicts import VerdictStore

PARAMS = Params()
CFG = PARAMS.review
LINE = LineConfig(name="demo", workspace="ws", dataset="data")


def _png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def _surface(seed: int, h: int = 60, w: int = 40) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.uniform(60, 190, (h, w))).astype(np.uint8)


def _blob(h: int, w: int, cy: float, cx: float, sigma: float) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma ** 2)).astype(np.float32)


def write_run(ws: Path, run_id: str, finished: str, rows: list[tuple[str, float]],
              threshold: float = 0.5, version: str = "1", maps: bool = True) -> None:
    """A scoring run as the nightly DAG leaves it: images, overlays, anomaly maps (unless
    ``maps`` is False: a run scored before maps were stored), scores.csv, outcome."""
    run_dir = ws / CFG.scores_dir / run_id
    lines = ["image,score,flag,threshold,model_version,overlay"
             + (",map,map_min,map_max" if maps else "")]
    for i, (image, score) in enumerate(rows):
        img = _png(ws / image, _surface(i))
        rgb = np.repeat(np.asarray(Image.open(img), dtype=np.float32)[..., None] / 255, 3, 2)
        heat = _blob(60, 40, 30, 20, 6)
        save_overlay(run_dir / "overlays" / f"{Path(image).stem}.png", rgb, heat, 0.0, 1.0)
        lines.append(f"{image},{score},{int(score >= threshold)},{threshold},{version},"
                     f"overlays/{Path(image).stem}.png")
        if maps:
            save_map(run_dir / "maps" / f"{Path(image).stem}.npy", heat)
            lines[-1] += f",maps/{Path(image).stem}.npy,0.0,1.0"
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "scores.csv").write_text("\n".join(lines) + "\n")
    outcome = ws / CFG.outcomes_dir / f"{run_id}.json"
    outcome.parent.mkdir(parents=True, exist_ok=True)
    outcome.write_text(json.dumps({"run_id": run_id, "line": "demo", "finished": finished,
                                   "champion_version": version}))


def test_queue_orders_by_score_and_keeps_latest_run(tmp_path: Path) -> None:
    write_run(tmp_path, "night1", "2025-03-01T03:00:00+00:00",
              [("data/n1/a.png", 0.9), ("data/n1/b.png", 0.2), ("data/shared.png", 0.1)])
    write_run(tmp_path, "night2", "2025-03-02T03:00:00+00:00",
              [("data/n2/c.png", 0.7), ("data/shared.png", 0.95)], threshold=0.6, version="2")
    queue = load_queue(tmp_path, CFG, "demo")
    assert [i.image for i in queue] == ["data/shared.png", "data/n1/a.png", "data/n2/c.png",
                                        "data/n1/b.png"]
    shared = queue[0]
    assert (shared.run_id, shared.model_version, shared.threshold) == ("night2", "2", 0.6)
    assert shared.scored_at == datetime(2025, 3, 2, 3, tzinfo=UTC)
    assert shared.overlay_path.is_file() and shared.image_path.is_file()
    assert shared.map_path.is_file() and shared.map_scale == (0.0, 1.0)
    assert count_flagged(queue, 0.5) == 3 and count_flagged(queue, 0.8) == 2

    only_latest = load_queue(tmp_path, CFG.model_copy(update={"recent_runs": 1}), "demo")
    assert {i.run_id for i in only_latest} == {"night2"}

    statuses = {"data/n1/a.png": "defect"}
    assert [i.image for i in filter_queue(queue, statuses, ["unreviewed"],
                                          since=date(2025, 3, 2))] == [
        "data/shared.png", "data/n2/c.png"]
    assert [i.image for i in filter_queue(queue, statuses, ["defect"])] == ["data/n1/a.png"]
    assert default_threshold(queue, "scores", 0.3) == 0.6
    assert default_threshold(queue, "champion", 0.3) == 0.3
    assert default_threshold(queue, "champion", None) == 0.6


def test_each_row_is_judged_by_the_threshold_of_its_model(tmp_path: Path) -> None:
    write_run(tmp_path, "night1", "2025-03-01T03:00:00+00:00", [("data/n1/a.png", 0.55)],
              threshold=0.5, version="1")
    write_run(tmp_path, "night2", "2025-03-02T03:00:00+00:00", [("data/n2/c.png", 0.58)],
              threshold=0.6, version="2")
    queue = load_queue(tmp_path, CFG, "demo")
    by_image = {i.image: i for i in queue}
    # What the two nights flagged (their scores.csv flag column): a by v1's 0.5, not c.
    assert [is_flagged(by_image[k]) for k in ("data/n1/a.png", "data/n2/c.png")] == [True, False]
    assert count_flagged(queue) == sum(int(i.flag) for i in queue) == 1
    assert count_flagged(queue, 0.6) == 0 and count_flagged(queue, 0.5) == 2  # one for all
    assert model_versions(queue) == ["1", "2"]
    assert default_threshold(queue, "scores", None) == 0.6  # the latest run's
    unknown = queue[0].__class__(**{**queue[0].__dict__, "threshold": None})
    assert is_flagged(unknown) is None and count_flagged([unknown]) == 0


def test_queue_empty_and_bad_scores(tmp_path: Path) -> None:
    assert load_queue(tmp_path, CFG, "demo") == []
    bad = tmp_path / CFG.scores_dir / "r1" / "scores.csv"
    bad.parent.mkdir(parents=True)
    bad.write_text("image,flag\nx.png,1\n")
    with pytest.raises(DataError, match=r"scores\.csv: scores lack column\(s\) \['score'\]"):
        load_queue(tmp_path, CFG, "demo")


def test_verdicts_are_append_only_and_latest_wins(tmp_path: Path) -> None:
    store = VerdictStore.for_workspace(CFG, tmp_path)
    first = store.record("demo", "data/a.png", "normal", "ana", note=" looks fine ")
    second = store.record("demo", "data/a.png", "defect", "bo", model_version="3")
    store.record("demo", "data/b.png", "unsure", "ana")
    store.record("other", "data/a.png", "normal", "cy")
    assert (tmp_path / CFG.db_file).is_file()

    reopened = VerdictStore.for_workspace(CFG, tmp_path)
    latest = reopened.latest("demo")
    assert {k: v.verdict for k, v in latest.items()} == {"data/a.png": "defect",
                                                         "data/b.png": "unsure"}
    assert latest["data/a.png"].operator == "bo" and latest["data/a.png"].model_version == "3"
    history = reopened.history("demo", "data/a.png")
    assert [v.id for v in history] == [second.id, first.id]
    assert history[1].note == "looks fine" and history[1].created_at.tzinfo is not None

    with pytest.raises(DataError, match="verdict must be one of"):
        store.record("demo", "data/a.png", "maybe", "ana")
    with pytest.raises(AccessDenied, match="operator name is required"):
        store.record("demo", "data/a.png", "normal", "  ")
    with pytest.raises(DataError, match="only a defect verdict can carry a mask"):
        store.record("demo", "data/a.png", "normal", "ana", mask_path="m.png")


def test_bad_db_url_is_a_config_error_without_password(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"review\.db_url nosuch://u:\*\*\*@h/db") as err:
        VerdictStore("nosuch://u:hunter2@h/db")
    assert "hunter2" not in str(err.value)


def test_heatmap_region_is_cut_from_the_stored_map(tmp_path: Path) -> None:
    # The image is 80x120 on disk, its map (model input size) 48x64, as predict writes them;
    # level 0.5 of a colour scale 1..3 is the raw value 2. No overlay is read.
    write_run(tmp_path, "night1", "2025-03-01T03:00:00+00:00", [("data/a.png", 0.9)])
    (item,) = load_queue(tmp_path, CFG, "demo")
    _png(item.image_path, np.stack([_surface(3, 120, 80)] * 3, axis=2))
    raw = 1.0 + 2.0 * _blob(64, 48, 20, 30, 7)
    save_map(item.map_path, raw)
    item.overlay_path.unlink()
    assert np.array_equal(read_map(item.map_path), raw.astype(np.float16))
    mask = mask_from_map(item.map_path, (1.0, 3.0), item.image_path, 0.5)
    truth = np.asarray(Image.fromarray(raw, mode="F").resize((80, 120), Image.BILINEAR)) >= 2.0
    assert mask.shape == (120, 80) and mask.any()
    iou = (mask & truth).sum() / (mask | truth).sum()
    assert iou > 0.99, iou

    bad = item.map_path.with_name("bad.npy")
    bad.write_bytes(b"not a map")
    with pytest.raises(DataError, match=r"bad\.npy: not a stored anomaly map"):
        read_map(bad)


def test_a_run_scored_before_maps_were_stored_offers_no_map(tmp_path: Path) -> None:
    write_run(tmp_path, "night1", "2025-03-01T03:00:00+00:00", [("data/a.png", 0.9)],
              maps=False)
    (item,) = load_queue(tmp_path, CFG, "demo")
    assert item.overlay_path.is_file()  # the dashboard still shows the overlay
    assert item.map_path is None and item.map_scale is None


def test_uploaded_mask_must_match_image(tmp_path: Path) -> None:
    image = _png(tmp_path / "img.png", _surface(1))
    drawn = np.zeros((60, 40), np.uint8)
    drawn[10:20, 5:15] = 255
    buf = io.BytesIO()
    Image.fromarray(drawn).save(buf, format="PNG")
    mask = mask_from_upload(buf.getvalue(), image, 127)
    assert mask.sum() == 100
    small = io.BytesIO()
    Image.fromarray(drawn[:30]).save(small, format="PNG")
    with pytest.raises(DataError, match="mask size 40x30 does not match image img.png size 40x60"):
        mask_from_upload(small.getvalue(), image, 127)
    with pytest.raises(DataError, match="upload: unreadable image"):
        mask_from_upload(b"not a png", image, 127)
    with pytest.raises(DataError, match="the mask is empty"):
        save_mask(np.zeros((4, 4), bool), tmp_path / "m.png")


def test_export_writes_inbox_labels_and_is_idempotent(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    inbox = ws / LINE.inbox
    write_run(ws, "night1", "2025-03-01T03:00:00+00:00",
              [("data/a.png", 0.9), ("data/b.png", 0.4), ("data/c.png", 0.3),
               ("data/d.png", 0.8)])
    inbox.mkdir(parents=True)
    (inbox / "labels.csv").write_text("image,label,mask,timestamp\n"
                                      "line-0001.png,normal,,2025-03-01T08:00:00\n")
    store = VerdictStore.for_workspace(CFG, ws)
    drawn = np.zeros((60, 40), bool)
    drawn[5:25, 10:30] = True
    mask_rel = new_mask_path(CFG, "data/a.png")
    save_mask(drawn, ws / mask_rel)
    store.record("demo", "data/a.png", "defect", "ana", mask_path=mask_rel)
    store.record("demo", "data/b.png", "normal", "ana")
    store.record("demo", "data/c.png", "unsure", "ana")
    store.record("demo", "data/d.png", "defect", "ana")  # no mask: held back

    result = export_pending(store, PARAMS, LINE, ws)
    assert len(result.exported) == 2
    assert result.held == [("data/d.png", "defect without a mask")]
    with open(inbox / "labels.csv", newline="") as f:
        rows = {r["image"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"line-0001.png", *result.exported}
    assert rows["line-0001.png"]["timestamp"] == "2025-03-01T08:00:00"
    a_name, b_name = result.exported
    assert rows[a_name]["label"] == "defect" and rows[b_name] == {
        "image": b_name, "label": "normal", "mask": "", "timestamp": "",
        "replaces": "b.png"}  # the data-set file it relabels
    assert (inbox / a_name).read_bytes() == (ws / "data/a.png").read_bytes()
    exported_mask = np.asarray(Image.open(inbox / rows[a_name]["mask"]))
    assert exported_mask.shape == (60, 40) and set(np.unique(exported_mask)) == {0, 255}
    assert np.array_equal(exported_mask == 255, drawn)

    assert export_pending(store, PARAMS, LINE, ws).exported == []
    store.record("demo", "data/b.png", "unsure", "bo")  # unsure later: nothing new to export
    assert export_pending(store, PARAMS, LINE, ws).exported == []
    store.record("demo", "data/b.png", "defect", "bo", mask_path=mask_rel)  # corrected
    again = export_pending(store, PARAMS, LINE, ws)
    assert again.exported == [b_name]
    with open(inbox / "labels.csv", newline="") as f:
        labels = list(csv.DictReader(f))
    assert len(labels) == 3 and [r["label"] for r in labels if r["image"] == b_name] == ["defect"]


def test_authorize_modes() -> None:
    assert authorize(CFG, " ana ") == "ana"
    with pytest.raises(AccessDenied, match="operator name"):
        authorize(CFG, "")
    secret = CFG.model_copy(update={"auth": "secret", "secret_env": "LINE_KEY"})
    assert authorize(secret, "ana", secret="s3cret", environ={"LINE_KEY": "s3cret"}) == "ana"
    with pytest.raises(AccessDenied, match="access key is wrong"):
        authorize(secret, "ana", secret="guess", environ={"LINE_KEY": "s3cret"})
    with pytest.raises(ConfigError, match="LINE_KEY is not set"):
        authorize(secret, "ana", secret="s3cret", environ={})
    with pytest.raises(ConfigError, match="neither review.trusted_proxies nor"):
        authorize(CFG.model_copy(update={"auth": "header"}), "", {"X-Forwarded-User": "bo"})

    # Trusted by address: the proxy's, never a local user's direct connection.
    proxied = params_from_dict({"review": {"auth": "header",
                                           "trusted_proxies": ["10.1.0.0/16", "::1"]}}).review
    assert authorize(proxied, "typed", {"X-Forwarded-User": "bo"}, peer="10.1.2.3") == "bo"
    assert authorize(proxied, "", {"x-forwarded-user": "bo"}, peer="::1") == "bo"
    for peer in ("127.0.0.1", "10.2.0.1", None, "not-an-ip"):
        with pytest.raises(AccessDenied, match="not from a trusted proxy"):
            authorize(proxied, "", {"X-Forwarded-User": "mallory"}, peer=peer)
    with pytest.raises(AccessDenied, match="X-Forwarded-User missing"):
        authorize(proxied, "typed", headers={}, peer="10.1.2.3")
    with pytest.raises(ConfigError, match="not an IP address or network: 'proxy.local'"):
        params_from_dict({"review": {"trusted_proxies": ["proxy.local"]}})

    # Trusted by the proxy's shared secret (a proxy on the same host as local users).
    keyed = params_from_dict({"review": {"auth": "header",
                                         "proxy_secret_env": "PROXY_KEY"}}).review
    env = {"PROXY_KEY": "pr0xy"}
    sent = {"X-Forwarded-User": "bo", "X-Exdd-Proxy-Secret": "pr0xy"}
    assert authorize(keyed, "", sent, environ=env, peer="127.0.0.1") == "bo"
    for headers in ({"X-Forwarded-User": "mallory"},
                    {"X-Forwarded-User": "mallory", "X-Exdd-Proxy-Secret": "guess"}):
        with pytest.raises(AccessDenied, match="X-Exdd-Proxy-Secret is missing or wrong"):
            authorize(keyed, "", headers, environ=env, peer="127.0.0.1")
    with pytest.raises(ConfigError, match="PROXY_KEY is not set"):
        authorize(keyed, "", sent, environ={})
    both = keyed.model_copy(update={"trusted_proxies": ["10.1.0.0/16"]})
    assert authorize(both, "", sent, environ=env, peer="10.1.0.9") == "bo"
    with pytest.raises(AccessDenied, match="not from a trusted proxy"):
        authorize(both, "", sent, environ=env, peer="127.0.0.1")


def test_review_config_rejects_a_secret_in_place_of_its_name() -> None:
    with pytest.raises(ConfigError, match="review.secret_env"):
        params_from_dict({"review": {"secret_env": "hunter2!"}})


def test_export_to_an_s3_inbox(tmp_path: Path, s3_server, monkeypatch: pytest.MonkeyPatch
                               ) -> None:
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    s3_server.create_bucket("line-inbox")
    ws = tmp_path / "ws"
    write_run(ws, "night1", "2025-03-01T03:00:00+00:00", [("data/a.png", 0.9),
                                                          ("data/b.png", 0.4)])
    store = VerdictStore.for_workspace(CFG, ws)
    mask_rel = new_mask_path(CFG, "data/a.png")
    save_mask(np.ones((60, 40), bool), ws / mask_rel)
    store.record("demo", "data/a.png", "defect", "ana", mask_path=mask_rel)
    store.record("demo", "data/b.png", "normal", "ana")
    line = LINE.model_copy(update={"inbox": "s3://line-inbox/demo/inbox"})

    result = export_pending(store, PARAMS, line, ws)
    client = s3_server.client()
    objects = client.list_objects_v2(Bucket="line-inbox", Prefix="demo/inbox/")["Contents"]
    a_name, b_name = result.exported
    a_mask = f"{Path(a_name).stem}_GT.png"
    assert sorted(o["Key"] for o in objects) == sorted(
        f"demo/inbox/{n}" for n in (a_name, a_mask, b_name, "labels.csv"))

    def body(name: str) -> bytes:
        return client.get_object(Bucket="line-inbox", Key=f"demo/inbox/{name}")["Body"].read()

    assert body(a_name) == (ws / "data/a.png").read_bytes()
    assert body(a_mask) == (ws / mask_rel).read_bytes()
    rows = list(csv.DictReader(io.StringIO(body("labels.csv").decode())))
    assert rows == [{"image": a_name, "label": "defect", "mask": a_mask, "replaces": "a.png"},
                    {"image": b_name, "label": "normal", "mask": "", "replaces": "b.png"}]
    assert export_pending(store, PARAMS, line, ws).exported == []
