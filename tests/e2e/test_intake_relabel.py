"""Operator verdicts come back through intake as label updates, not as duplicates.

The inbox is written by the real review export (``exdd.line.review.export.export_pending`` from a
real sqlite ``VerdictStore``) for images a real intake accepted; the next intake must move
their labels and masks into the manifest, keep the old rows in the label history,
quarantine bad masks, file every inbox file once, and survive a SIGKILL like any batch.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from test_intake import (
    H,
    W,
    _exdd_validate,
    end_state,
    files_in,
    params_file,
    save,
    sha,
    texture,
)

from exdd.config import LineConfig, Params, load_params
from exdd.data.readers import load_samples, read_mask
from exdd.line.intake import IntakeResult, validate_inbox
from exdd.line.intake.journal import JOURNAL_NAME
from exdd.line.intake.manifest import HISTORY_NAME
from exdd.line.intake.validate import WORK_DIR
from exdd.line.review.export import export_pending
from exdd.line.review.masks import new_mask_path, save_mask
from exdd.line.review.verdicts import VerdictStore

LINE = LineConfig(name="demo", workspace="ws", inbox="data/inbox", dataset="data/dataset")
DS_IN_WS = "data/dataset"


@dataclass
class Exported:
    ws: Path
    ds: Path
    inbox: Path
    params: Params
    first: IntakeResult  # the intake that built the data set
    names: dict[str, str]  # role -> inbox image name
    drawn: np.ndarray  # the defect region the operator confirmed for "to_defect"


def _ws_image(first: IntakeResult, key: str) -> str:
    """Workspace-relative path of the data-set image an inbox key was accepted as."""
    return f"{DS_IN_WS}/{first.placements[key]}"


def _first_intake(ws: Path, params: Params) -> IntakeResult:
    """Five accepted images, one of them a defect with its mask."""
    batch = ws / "first-batch"
    for i in range(4):
        save(batch / f"good_{i}.png", texture(i))
    save(batch / "defect.png", texture(7))
    old = np.zeros((H, W), np.uint8)
    old[2:6, 3:9] = 255
    save(batch / "defect_GT.png", old)
    (batch / "labels.csv").write_text("image,label,mask\ndefect.png,defect,defect_GT.png\n")
    result = validate_inbox(str(batch), ws / DS_IN_WS, ws / "reports" / "first",
                            params.intake, params.data)
    assert result.n_accepted == 5 and result.n_quarantined == 0
    return result


def export_verdicts(root: Path, params_path: Path) -> Exported:
    """A line workspace whose data set came through intake, and the verdicts on five of
    its images (plus one image from outside it) exported into its inbox by exdd.line.review."""
    ws = root / "ws"
    params = load_params(params_path)
    first = _first_intake(ws, params)
    store = VerdictStore.for_workspace(params.review, ws)
    cfg = params.review

    drawn = np.zeros((H, W), bool)
    drawn[10:20, 12:30] = True
    to_defect = _ws_image(first, "good_0.png")
    mask_rel = new_mask_path(cfg, to_defect)
    save_mask(drawn, ws / mask_rel)
    store.record(LINE.name, to_defect, "defect", "ana", mask_path=mask_rel)
    store.record(LINE.name, _ws_image(first, "defect.png"), "normal", "ana", note="glare")
    save(ws / "reviews" / "small.png", np.full((H // 2, W // 2), 255, np.uint8))
    store.record(LINE.name, _ws_image(first, "good_1.png"), "defect", "bo",
                 mask_path="reviews/small.png")  # a mask of the wrong size
    save(ws / "reviews" / "empty.png", np.zeros((H, W), np.uint8))
    store.record(LINE.name, _ws_image(first, "good_2.png"), "defect", "bo",
                 mask_path="reviews/empty.png")  # an empty mask
    store.record(LINE.name, _ws_image(first, "good_3.png"), "normal", "bo")
    save(ws / "night" / "outside.png", texture(21))  # scored, but not in the data set
    store.record(LINE.name, "night/outside.png", "normal", "bo")

    result = export_pending(store, params, LINE, ws)
    assert result.held == [] and len(result.exported) == 6
    roles = ("to_defect", "to_normal", "small_mask", "empty_mask", "tampered", "outside")
    names = dict(zip(roles, result.exported))
    inbox = ws / LINE.inbox
    # the line replaced a file after the export: 'replaces' now names other bytes
    save(inbox / names["tampered"], texture(33))
    # a hand-written row naming no data-set image, with the bytes of one
    (inbox / "ghost.png").write_bytes((ws / _ws_image(first, "good_3.png")).read_bytes())
    with open(inbox / params.intake.labels_file, "a", newline="") as f:
        csv.writer(f, lineterminator="\n").writerow(
            ["ghost.png", "normal", "", "images/not-there.png"])
    return Exported(ws, ws / DS_IN_WS, inbox, params, first, names, drawn)


def _reason(ds: Path, where: str) -> dict:
    path = (ds / where.replace("/files/", "/reasons/", 1)).with_name(Path(where).name + ".json")
    return json.loads(path.read_text())


def test_verdicts_become_label_updates_with_history(tmp_path: Path) -> None:
    ex = export_verdicts(tmp_path, params_file(tmp_path))
    n = ex.names
    before = files_in(ex.inbox)
    ds_before = files_in(ex.ds)
    rows = {r["image"]: r for r in csv.DictReader(open(ex.inbox / "labels.csv", newline=""))}
    assert rows[n["to_defect"]]["replaces"] == ex.first.placements["good_0.png"]

    result = validate_inbox(str(ex.inbox), ex.ds, tmp_path / "report", ex.params.intake,
                            ex.params.data)

    # every inbox file filed exactly once, byte for byte; the inbox is drained
    assert files_in(ex.inbox) == {}
    assert set(result.placements) == set(before)
    for key, digest in before.items():
        assert sha(ex.ds / result.placements[key]) == digest, key
    relabel = {"to_defect": "good_0.png", "to_normal": "defect.png"}
    for role, key in relabel.items():  # a label update: the image is the data set's own
        assert result.placements[n[role]] == ex.first.placements[key]
    assert sorted(result.relabelled) == sorted(ex.first.placements[k] for k in relabel.values())
    assert result.n_relabelled == 2 and result.n_accepted == 2 and result.n_quarantined == 3
    assert result.n_total == 7 and result.passed
    new_images = {result.placements[n["tampered"]], result.placements[n["outside"]]}
    assert set(result.accepted) == new_images
    added = {r for r in files_in(ex.ds) if r.startswith("images/")} - set(ds_before)
    assert added == new_images  # the relabelled images were not copied again

    # bad masks and a 'replaces' that names nothing are quarantined with their reasons
    expect = {"small_mask": {"mask_size_match"}, "empty_mask": {"mask_nonempty"},
              "ghost": {"duplicate_in_dataset"}}
    for role, columns in expect.items():
        key = n.get(role, "ghost.png")
        where = result.placements[key]
        assert where.startswith(f"quarantine/{result.batch}/files/")
        reason = _reason(ex.ds, where)
        assert {f["column"] for f in reason["failed"]} == columns, role
        assert reason["metadata"]["kind"] == ("new" if role == "ghost" else "relabel")
    small_mask = f"{Path(n['small_mask']).stem}_GT.png"
    assert result.placements[small_mask].startswith(f"quarantine/{result.batch}/files/")

    # the manifest carries the new labels and masks; consumers see them
    samples = {s.image.relative_to(ex.ds).as_posix(): s
               for s in load_samples(ex.ds / "manifest.csv")}
    assert len(samples) == 7
    defect = samples[ex.first.placements["good_0.png"]]
    assert defect.label == 1 and defect.mask is not None
    mask = read_mask(defect.mask, H, W, image_path=defect.image)
    assert np.array_equal(mask, ex.drawn)
    new_mask = defect.mask.relative_to(ex.ds).as_posix()
    assert new_mask.startswith("masks/")
    assert result.placements[f"{Path(n['to_defect']).stem}_GT.png"] == new_mask
    normal = samples[ex.first.placements["defect.png"]]
    assert normal.label == 0 and normal.mask is None
    for key in ("good_1.png", "good_2.png", "good_3.png"):  # failed or tampered: unchanged
        assert samples[ex.first.placements[key]].label == 0

    # the history keeps the old rows (and the old mask stays on disk)
    history = [json.loads(line) for line in (ex.ds / HISTORY_NAME).read_text().splitlines()]
    by_image = {h["image"]: h for h in history}
    assert set(by_image) == set(result.relabelled)
    flipped = by_image[ex.first.placements["defect.png"]]
    assert (flipped["old"]["label"], flipped["new"]["label"]) == ("defect", "normal")
    assert flipped["batch"] == result.batch and flipped["changed"]
    assert flipped["source"].endswith(n["to_normal"])
    old_mask = flipped["old"]["mask"]
    assert old_mask.startswith("masks/") and sha(ex.ds / old_mask) == ds_before[old_mask]
    raised = by_image[ex.first.placements["good_0.png"]]
    assert (raised["old"]["label"], raised["new"]["label"]) == ("normal", "defect")
    assert (raised["old"]["mask"], raised["new"]["mask"]) == ("", new_mask)

    report = json.loads((tmp_path / "report" / "intake.json").read_text())
    kinds = {f["path"]: (f["kind"], f["replaces"], f["placed_at"]) for f in report["files"]}
    assert kinds[n["to_normal"]] == ("relabel", ex.first.placements["defect.png"],
                                     ex.first.placements["defect.png"])
    assert report["summary"]["relabelled"] == result.relabelled

    # a later correction appends to the history; earlier lines stay byte for byte
    store = VerdictStore.for_workspace(ex.params.review, ex.ws)
    store.record(LINE.name, _ws_image(ex.first, "good_0.png"), "normal", "cy")
    assert export_pending(store, ex.params, LINE, ex.ws).exported == [n["to_defect"]]
    text = (ex.ds / HISTORY_NAME).read_text()
    again = validate_inbox(str(ex.inbox), ex.ds, None, ex.params.intake, ex.params.data)
    assert again.relabelled == [ex.first.placements["good_0.png"]] and again.n_quarantined == 0
    grown = (ex.ds / HISTORY_NAME).read_text()
    assert grown.startswith(text) and len(grown.splitlines()) == 3
    last = json.loads(grown.splitlines()[-1])
    assert (last["old"]["mask"], last["new"]["mask"]) == (new_mask, "")
    assert (ex.ds / new_mask).is_file()  # the superseded mask is kept
    now = {s.image.relative_to(ex.ds).as_posix(): s for s in load_samples(ex.ds / "manifest.csv")}
    assert len(now) == 7 and now[ex.first.placements["good_0.png"]].label == 0
    assert now[ex.first.placements["good_0.png"]].mask is None


def _history_state(ds: Path) -> list[dict]:
    """The label history minus the wall-clock times a re-run legitimately changes."""
    entries = []
    for line in (ds / HISTORY_NAME).read_text().splitlines():
        entry = json.loads(line)
        entry.pop("changed")
        for side in ("old", "new"):
            entry[side].pop("added")
        entries.append(entry)
    return entries


def test_killed_relabel_intake_reruns_to_the_same_end_state(tmp_path: Path) -> None:
    config = params_file(tmp_path)
    line = tmp_path / "line"  # both runs at the same path: provenance names the inbox
    ref = export_verdicts(line, config)
    ref_result = validate_inbox(str(ref.inbox), ref.ds, tmp_path / "ref-report",
                                ref.params.intake, ref.params.data)
    ref_ds = line.rename(tmp_path / "ref") / "ws" / DS_IN_WS
    ex = export_verdicts(line, config)
    original = files_in(ex.inbox)
    report = tmp_path / "report"

    proc = _exdd_validate(ex.inbox, ex.ds, report, config, kill_at=2)  # mid-moves
    assert proc.wait() < 0, proc.stderr.read().decode()
    assert files_in(ex.inbox) == original
    n_moves = len(json.loads((ex.ds / WORK_DIR / JOURNAL_NAME).read_text())["moves"])
    proc = _exdd_validate(ex.inbox, ex.ds, report, config, kill_at=n_moves + 1 + 2)  # draining
    assert proc.wait() < 0, proc.stderr.read().decode()
    assert len(files_in(ex.inbox)) == len(original) - 1

    result = validate_inbox(str(ex.inbox), ex.ds, report, ex.params.intake, ex.params.data)
    assert files_in(ex.inbox) == {} and not (ex.ds / WORK_DIR).exists()
    assert result.batch == ref_result.batch and result.placements == ref_result.placements
    assert result.relabelled == ref_result.relabelled and result.n_relabelled == 2

    def state(ds: Path) -> dict:
        return {k: v for k, v in end_state(ds).items() if k != HISTORY_NAME}

    assert state(ex.ds) == state(ref_ds)
    assert _history_state(ex.ds) == _history_state(ref_ds)
    assert len(_history_state(ex.ds)) == 2


def test_replaces_without_a_matching_image_is_a_normal_row(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    # two of the three rows fail on purpose: the batch must still pass to accept the third
    params = load_params(params_file(tmp_path, max_failed_fraction=0.9))
    first = _first_intake(ws, params)
    ds, inbox = ws / DS_IN_WS, tmp_path / "inbox"
    inbox.mkdir()
    img = {k: first.placements[f"good_{k}.png"] for k in range(3)}
    (inbox / "names_nothing.png").write_bytes((ds / img[0]).read_bytes())
    (inbox / "names_other.png").write_bytes((ds / img[1]).read_bytes())
    save(inbox / "fresh.png", texture(40))
    (inbox / "labels.csv").write_text(
        "image,label,mask,replaces\n"
        "names_nothing.png,normal,,images/not-there.png\n"
        f"names_other.png,normal,,{img[2]}\n"  # another image's bytes
        f"fresh.png,normal,,{img[0]}\n")  # new bytes

    result = validate_inbox(str(inbox), ds, None, params.intake, params.data)

    assert result.n_relabelled == 0 and not (ds / HISTORY_NAME).exists()
    assert result.accepted == [result.placements["fresh.png"]]
    for key, dup in (("names_nothing.png", img[0]), ("names_other.png", img[1])):
        reason = _reason(ds, result.placements[key])
        assert [f["column"] for f in reason["failed"]] == ["duplicate_in_dataset"]
        assert reason["metadata"]["kind"] == "new"
        assert reason["metadata"]["duplicate_in_dataset"] == dup
