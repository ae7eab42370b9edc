"""The review dashboard's pages, run by Streamlit's AppTest against a real line workspace:
git + DVC, an MLflow sqlite registry with two published versions, a night's scores."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from review_fixtures import LineFixture, line_copy
from streamlit.testing.v1 import AppTest

from exdd.inference.batch import read_map, write_predictions
from exdd.config import load_params
from exdd.detector.model import ExDD
from exdd.line.registry import CHAMPION, Registry
from exdd.line.lines import line_config
from exdd.line.review.export import inbox_name
from exdd.line.review.masks import mask_from_map
from exdd.line.review.queue import load_queue
from exdd.line.review.verdicts import VerdictStore

APP = Path(__file__).parents[2] / "dashboards" / "app.py"
TIMEOUT = 120


@pytest.fixture
def line(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path,
         monkeypatch: pytest.MonkeyPatch) -> LineFixture:
    fixture = line_copy(tmp_path_factory.getbasetemp(), tmp_path / "line")
    monkeypatch.setenv("EXDD_PARAMS", str(fixture.params_file))
    return fixture


def _set_review(fixture: LineFixture, **review: object) -> None:
    raw = yaml.safe_load(fixture.params_file.read_text())
    raw["review"].update(review)
    fixture.params_file.write_text(yaml.safe_dump(raw))


def _app() -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    assert not at.exception, at.exception
    return at


def _metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def _form(at: AppTest, name: str) -> str:
    """Key of a verdict widget of the image under review."""
    return f"{name}:{at.selectbox(key='selected').value}"


def _champion(fixture: LineFixture) -> int:
    params = load_params(fixture.workspace / "params.yaml")
    return int(Registry(params, fixture.workspace).alias(CHAMPION).version)


def test_queue_renders_most_suspicious_first(line: LineFixture) -> None:
    at = _app()
    assert at.title[0].value == "Review queue · line demo"
    table = at.dataframe[0].value
    with open(next((line.workspace / "reviews" / "scores").glob("*/scores.csv"))) as f:
        scores = list(csv.DictReader(f))
    assert list(table["image"]) == [r["image"] for r in sorted(
        scores, key=lambda r: -float(r["score"]))]
    threshold = float(scores[0]["threshold"])
    flagged = sum(int(r["flag"]) for r in scores)  # what the nightly run flagged
    assert at.radio(key="threshold_mode").value == "each model's own"
    assert _metric(at, "Flagged (shown)") == f"{flagged} / {len(scores)}"
    assert _metric(at, "Champion") == "v2" and _metric(at, "Scored by") == "v2"
    assert set(table["model"]) == {"v2"} and set(table["threshold"]) == {threshold}
    assert len(at.image) == 2  # the image and its heatmap overlay

    at.radio(key="threshold_mode").set_value("one for all models").run()
    assert at.slider(key="threshold").value == pytest.approx(threshold)
    at.slider(key="threshold").set_value(min(float(r["score"]) for r in scores)).run()
    assert _metric(at, "Flagged (shown)") == f"{len(scores)} / {len(scores)}"
    assert at.button(key="record").disabled  # no operator, no action
    assert any("operator name" in w.value for w in at.warning)


def test_queue_of_two_model_versions_judges_each_by_its_own_threshold(
        line: LineFixture, tmp_path: Path) -> None:
    """A night scored by v1 and one by v2: the queue flags what the nights flagged, not
    what the first row's threshold would flag on every model's scores."""
    params = load_params(line.workspace / "params.yaml")
    registry = Registry(params, line.workspace)
    v1 = next(v for v in registry.versions() if int(v.version) == 1)
    model = ExDD.load(registry.download_model_dir(v1, tmp_path / "v1"))
    images = sorted(p for p in (line.workspace / params.gate.benchmark / "test").rglob("*.png")
                    if not p.stem.endswith("_GT"))[:4]
    pred = model.predict(images)
    v1_scores = pred.scores
    with open(next((line.workspace / "reviews" / "scores").glob("*/scores.csv"))) as f:
        v2_rows = list(csv.DictReader(f))
    v2_threshold = float(v2_rows[0]["threshold"])
    # v1's own threshold flags a different number of its images than v2's would.
    under_v2 = int((v1_scores >= v2_threshold).sum())
    v1_threshold = float(v1_scores.max()) + 1.0 if under_v2 else float(v1_scores.min())
    older = line.workspace / "reviews" / "scores" / "older-v1"
    write_predictions(model, images, older, v1_threshold, 1, relative_to=line.workspace)
    with open(older / "scores.csv") as f:
        v1_rows = list(csv.DictReader(f))
    for row, amap in zip(v1_rows, pred.maps):  # the raw maps, beside the overlays
        assert (older / row["overlay"]).is_file()
        assert np.allclose(read_map(older / row["map"]), amap, rtol=1e-3, atol=1e-6)
        assert (float(row["map_min"]), float(row["map_max"])) == pytest.approx(
            (float(pred.maps.min()), float(pred.maps.max())))
    (line.workspace / params.review.outcomes_dir / "older-v1.json").write_text(json.dumps(
        {"run_id": "older-v1", "line": "demo", "finished": "2025-03-01T02:20:00+00:00"}))
    nightly = sum(int(r["flag"]) for r in v1_rows + v2_rows)
    total = len(v1_rows) + len(v2_rows)

    at = _app()
    assert not at.exception, at.exception
    assert _metric(at, "Flagged (shown)") == f"{nightly} / {total}"
    assert _metric(at, "Scored by") == "v1, v2"
    table = at.dataframe[0].value
    assert sorted(table["model"]) == sorted(["v1"] * len(v1_rows) + ["v2"] * len(v2_rows))
    by_image = dict(zip(table["image"], table["flagged"]))
    assert all(by_image[r["image"]] == bool(int(r["flag"])) for r in v1_rows + v2_rows)

    at.radio(key="threshold_mode").set_value("one for all models").run()
    assert at.slider(key="threshold").value == pytest.approx(v2_threshold)  # the latest run's
    one_for_all = under_v2 + sum(float(r["score"]) >= v2_threshold for r in v2_rows)
    assert one_for_all != nightly
    assert _metric(at, "Flagged (shown)") == f"{one_for_all} / {total}"


def test_verdicts_recorded_and_exported_to_the_inbox(line: LineFixture) -> None:
    at = _app()
    at.sidebar.text_input(key="operator").input("ana").run()
    first = at.selectbox(key="selected").value
    at.radio(key=_form(at, "verdict")).set_value("defect").run()
    at.radio(key=_form(at, "mask_mode")).set_value("heatmap region").run()
    assert len(at.image) == 3  # image, overlay and the mask preview
    at.text_input(key=_form(at, "note")).input("scratch near the edge").run()
    at.button(key="record").click().run()
    assert not at.exception, at.exception
    assert any("Recorded **defect**" in s.value for s in at.success)

    second = at.selectbox(key="selected").value
    assert second != first and first not in list(at.dataframe[0].value["image"])
    assert at.radio(key=_form(at, "verdict")).value is None  # a fresh form for the next image
    drawn = np.zeros(Image.open(line.workspace / second).size[::-1], np.uint8)
    drawn[4:20, 6:30] = 255
    png = io.BytesIO()
    Image.fromarray(drawn).save(png, format="PNG")
    at.radio(key=_form(at, "verdict")).set_value("defect").run()
    at.radio(key=_form(at, "mask_mode")).set_value("upload a drawn mask").run()
    at.file_uploader(key=_form(at, "mask_upload")).upload("drawn.png", png.getvalue(),
                                                         "image/png").run()
    at.button(key="record").click().run()
    third = at.selectbox(key="selected").value
    at.radio(key=_form(at, "verdict")).set_value("normal").run()
    at.button(key="record").click().run()
    assert not at.exception, at.exception

    params = load_params(line.workspace / "params.yaml")
    cfg = line_config(load_params(line.params_file), "demo")
    store = VerdictStore.for_workspace(params.review, line.workspace)
    latest = store.latest("demo")
    assert {k: (v.verdict, v.operator) for k, v in latest.items()} == {
        first: ("defect", "ana"), second: ("defect", "ana"), third: ("normal", "ana")}
    assert latest[first].note == "scratch near the edge" and latest[first].model_version == "2"
    inbox = line.workspace / cfg.inbox
    with open(inbox / "labels.csv", newline="") as f:
        by_name = {r["image"]: r for r in csv.DictReader(f)}
    rows = [by_name[inbox_name(image)] for image in (first, second, third)]
    assert [r["label"] for r in rows] == ["defect", "defect", "normal"]
    assert [r["replaces"] for r in rows] == [  # relabels of accepted data-set images
        Path(i).relative_to(cfg.dataset).as_posix() for i in (first, second, third)]
    for row, image in zip(rows, (first, second, third)):
        assert (inbox / row["image"]).read_bytes() == (line.workspace / image).read_bytes()
    for row in rows[:2]:
        mask = np.asarray(Image.open(inbox / row["mask"]))
        assert mask.shape == drawn.shape and set(np.unique(mask)) == {0, 255}
    assert np.array_equal(np.asarray(Image.open(inbox / rows[1]["mask"])), drawn)
    scored = next(i for i in load_queue(line.workspace, params.review, "demo") if i.image == first)
    cut = mask_from_map(scored.map_path, scored.map_scale, scored.image_path,
                        params.review.mask_level)  # the heatmap region: from the stored map
    assert np.array_equal(np.asarray(Image.open(inbox / rows[0]["mask"])) == 255, cut)
    assert rows[2]["mask"] == ""


def test_rollback_needs_confirmation_and_moves_the_alias(line: LineFixture) -> None:
    at = _app()
    at.switch_page("views/model.py").run()
    assert not at.exception, at.exception
    assert _metric(at, "Champion") == "v2"
    versions = at.dataframe[0].value
    assert list(versions["version"]) == [2, 1] and list(versions["aliases"]) == ["champion", ""]
    assert list(versions["git tag"]) == ["model-demo-v2", "model-demo-v1"]
    assert list(versions["gate"]) == ["passed", "passed"]
    assert ["roc_pr.png"] in [i.captions for i in at.image]
    assert at.button(key="rollback").disabled  # no operator, no reason

    at.sidebar.text_input(key="operator").input("bo").run()
    at.selectbox(key="rollback_to").set_value(1)
    at.text_input(key="rollback_reason").input("v2 misses scratches").run()
    at.button(key="rollback").click().run()
    assert _champion(line) == 2  # asked, not done
    assert at.button(key="rollback_confirm").label == "Confirm rollback to v1"
    at.button(key="rollback_cancel").click().run()
    assert not [b for b in at.button if b.key == "rollback_confirm"]
    assert _champion(line) == 2

    at.button(key="rollback").click().run()
    at.button(key="rollback_confirm").click().run()
    assert not at.exception, at.exception
    assert _champion(line) == 1
    assert _metric(at, "Champion") == "v1"  # no restart needed
    assert list(at.dataframe[0].value["aliases"]) == ["", "champion"]
    assert any("is the champion again" in s.value for s in at.success)
    audit = [json.loads(x) for x in (line.workspace / "audit" / "models.jsonl")
             .read_text().splitlines()]
    assert audit[-1]["event"] == "rollback" and audit[-1]["who"] == "bo"
    assert audit[-1]["reason"] == "v2 misses scratches" and audit[-1]["from_version"] == 2
    assert audit[-1]["pinned"] is True

    # The rollback pinned the line: shown, and lifted only by an operator with a reason.
    assert any("pinned to v1 by bo" in w.value for w in at.warning)
    assert at.button(key="unpin").disabled
    at.text_input(key="unpin_reason").input("v3 fixes the scratches").run()
    at.button(key="unpin").click().run()
    assert not at.exception, at.exception
    assert any("unpinned" in s.value for s in at.success)
    assert not any("pinned to v1" in w.value for w in at.warning)
    audit = [json.loads(x) for x in (line.workspace / "audit" / "models.jsonl")
             .read_text().splitlines()]
    assert (audit[-1]["event"], audit[-1]["who"], audit[-1]["reason"]) == (
        "unpin", "bo", "v3 fixes the scratches")


def test_empty_state_without_a_published_model(tmp_path_factory: pytest.TempPathFactory,
                                                tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    fixture = line_copy(tmp_path_factory.getbasetemp(), tmp_path / "line", publish_models=False)
    monkeypatch.setenv("EXDD_PARAMS", str(fixture.params_file))
    at = _app()
    assert any("No model is published for line demo" in i.value for i in at.info)
    assert any("No scored images yet" in i.value for i in at.info)
    at.switch_page("views/model.py").run()
    assert not at.exception, at.exception
    assert any("No model is published for line demo" in i.value for i in at.info)
    assert not at.metric and not at.button
    assert not (fixture.workspace / "mlruns.db").exists()  # looking creates no registry


def test_shared_secret_and_proxy_header_gate_every_action(
        line: LineFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    _set_review(line, auth="secret", secret_env="EXDD_TEST_LINE_KEY")
    monkeypatch.setenv("EXDD_TEST_LINE_KEY", "open-sesame")
    at = _app()
    at.sidebar.text_input(key="operator").input("ana").run()
    assert any("access key is wrong" in w.value for w in at.sidebar.warning)
    # Without the key nothing of the line is shown: no scores, images or models.
    assert not at.dataframe and not at.image and not at.metric
    assert any("Sign in" in i.value for i in at.info)
    at.switch_page("views/model.py").run()
    assert not at.exception, at.exception
    assert not at.dataframe and not at.image and not at.metric and not at.button
    at.switch_page("views/queue.py").run()
    at.sidebar.text_input(key="access_key").input("open-sesame").run()
    assert at.dataframe and _metric(at, "Champion") == "v2"
    at.radio(key=_form(at, "verdict")).set_value("normal").run()
    assert not at.button(key="record").disabled
    texts = [e.value for e in (*at.markdown, *at.caption, *at.warning, *at.error, *at.info)]
    assert not any("open-sesame" in t for t in texts)  # the key is never echoed

    _set_review(line, auth="header")  # no proxy address, no proxy secret: refused outright
    at = _app()
    assert any("neither review.trusted_proxies" in e.value for e in at.sidebar.error)
    assert not at.dataframe and not at.image

    _set_review(line, auth="header", proxy_secret_env="EXDD_TEST_PROXY_KEY")
    monkeypatch.setenv("EXDD_TEST_PROXY_KEY", "pr0xy")
    at = _app()  # AppTest sends no proxy headers: nobody may act, or look
    assert any("X-Exdd-Proxy-Secret is missing or wrong" in w.value for w in at.sidebar.warning)
    assert not at.dataframe and not at.image and not at.metric
