"""Line-data intake on a local inbox: real broken files, real great-expectations runs.

Every inbox file must end up in exactly one of data set or quarantine, byte for byte, and
a run killed half-way (a real SIGKILL, at chosen and at uncontrolled points) must be
finished by a re-run into the state an uninterrupted run reaches.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from exdd.cli import main
from exdd.config import load_params
from exdd.data.readers import load_samples, read_mask
from exdd.line.intake import validate_inbox
from exdd.line.intake.journal import JOURNAL_NAME, KILL_ENV
from exdd.line.intake.validate import WORK_DIR

H, W = 32, 48  # the line's image size (tiny: fast)
SEED_IMAGES = 3


def texture(seed: int, base: float = 128.0, h: int = H, w: int = W) -> np.ndarray:
    """A grey 'surface' with noise: mean ~base, std ~20."""
    rng = np.random.default_rng(seed)
    return np.clip(base + rng.normal(0.0, 20.0, (h, w)), 0, 255).astype(np.uint8)


def save(path: Path, arr: np.ndarray, **kw: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, **kw)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def seed_dataset(ds: Path) -> None:
    """An accepted manifest data set of the line's look, as an earlier intake leaves it."""
    rows = []
    for i in range(SEED_IMAGES):
        img = ds / "images" / f"seed{i}.png"
        save(img, texture(100 + i))
        rows.append({"image": f"images/seed{i}.png", "mask": "", "label": "normal",
                     "split": "train", "sha256": sha(img), "source": "seed", "added": "x"})
    with open(ds / "manifest.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def make_inbox(inbox: Path, ds: Path) -> dict[str, set[str]]:
    """Write the test batch; returns {image key: columns whose expectation it must break}."""
    expect: dict[str, set[str]] = {}
    for i in range(4):
        save(inbox / f"good_{i}.png", texture(i))
        expect[f"good_{i}.png"] = set()
    save(inbox / "line2" / "good.jpg", texture(9), quality=95)  # sub-folder, JPEG
    expect["line2/good.jpg"] = set()
    png = (inbox / "good_0.png").read_bytes()
    jpg = (inbox / "line2" / "good.jpg").read_bytes()
    (inbox / "truncated.png").write_bytes(png[: len(png) // 2])
    (inbox / "truncated.jpg").write_bytes(jpg[: len(jpg) // 2])
    (inbox / "zero.png").write_bytes(b"")
    (inbox / "text.png").write_text("not an image\n")
    expect.update({k: {"decodable"} for k in ("truncated.png", "truncated.jpg", "zero.png",
                                              "text.png")})
    save(inbox / "wrong_size.png", texture(5, h=H // 4, w=W // 4))  # tiny: below min_side
    expect["wrong_size.png"] = {"width", "height"}
    save(inbox / "wrong_mode.png", np.dstack([texture(6)] * 3 + [np.full((H, W), 255, np.uint8)]))
    expect["wrong_mode.png"] = {"mode"}
    save(inbox / "black.png", np.zeros((H, W), np.uint8))
    expect["black.png"] = {"mean_intensity", "std_intensity"}
    save(inbox / "dim.png", texture(11, base=60.0))  # inside params, outside the data set's
    expect["dim.png"] = {"mean_intensity"}
    (inbox / "zz_copy_of_good_1.png").write_bytes((inbox / "good_1.png").read_bytes())
    expect["zz_copy_of_good_1.png"] = {"duplicate_in_inbox"}
    shutil.copy(ds / "images" / "seed0.png", inbox / "already_in_dataset.png")
    expect["already_in_dataset.png"] = {"duplicate_in_dataset"}

    mask = np.zeros((H, W), np.uint8)
    mask[8:16, 10:20] = 255
    save(inbox / "defect_ok.png", texture(7))
    save(inbox / "masks" / "defect_ok.png", mask)
    expect["defect_ok.png"] = set()
    save(inbox / "defect_no_mask.png", texture(8))
    expect["defect_no_mask.png"] = {"mask"}
    save(inbox / "defect_bad_mask.png", texture(10))
    save(inbox / "masks" / "defect_bad_mask.png", np.full((H // 2, W // 2), 255, np.uint8))
    expect["defect_bad_mask.png"] = {"mask_size_match"}
    save(inbox / "test_split.png", texture(12))
    expect["test_split.png"] = set()
    (inbox / "labels.csv").write_text(
        "image,label,mask,split,timestamp\n"
        "defect_ok.png,defect,masks/defect_ok.png,,2026-11-28T23:10:00\n"
        "defect_no_mask.png,defect,,,\n"
        "defect_bad_mask.png,defect,masks/defect_bad_mask.png,,\n"
        "test_split.png,normal,,test,\n"
        "not_in_inbox.png,normal,,,\n"
    )
    return expect


def files_in(root: Path) -> dict[str, str]:
    """{relative path: sha256} of every file below root."""
    return {p.relative_to(root).as_posix(): sha(p) for p in sorted(root.rglob("*")) if p.is_file()}


def assert_filed_once(before: dict[str, str], ds: Path, placements: dict[str, str],
                      seeded: dict[str, str]) -> None:
    """Each inbox file sits at its placement byte for byte, and nowhere else in the data set."""
    assert set(placements) == set(before)
    for key, digest in before.items():
        assert sha(ds / placements[key]) == digest, key
    stored = {rel: d for rel, d in files_in(ds).items()
              if rel != "manifest.csv" and "/reasons/" not in rel and rel not in seeded}
    assert Counter(stored.values()) == Counter(before.values())
    assert set(stored) == set(placements.values())
    assert not (ds / WORK_DIR).exists()


def end_state(ds: Path) -> dict[str, object]:
    """The data set's content, minus the wall-clock times a re-run legitimately changes."""
    state: dict[str, object] = {}
    for rel, digest in files_in(ds).items():
        if rel == "manifest.csv":
            with open(ds / rel, newline="") as f:
                state[rel] = [{k: v for k, v in r.items() if k != "added"}
                              for r in csv.DictReader(f)]
        elif "/reasons/" in rel:
            reason = json.loads((ds / rel).read_text())
            reason.pop("quarantined")
            state[rel] = reason
        else:
            state[rel] = digest
    return state


def params_file(tmp_path: Path, **intake: object) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"intake": intake}))
    return path


def test_local_inbox_every_file_filed_once_with_reasons(tmp_path: Path) -> None:
    ds, inbox = tmp_path / "ds", tmp_path / "inbox"
    seed_dataset(ds)
    seeded = files_in(ds)
    expect = make_inbox(inbox, ds)
    before = files_in(inbox)
    params = load_params(params_file(tmp_path, max_failed_fraction=0.9))

    result = validate_inbox(str(inbox), ds, tmp_path / "report", params.intake, params.data)

    assert files_in(inbox) == {}
    assert_filed_once(before, ds, result.placements, seeded)
    bad = {k for k, cols in expect.items() if cols}
    good = set(expect) - bad
    assert result.n_total == len(expect)
    assert result.n_accepted == len(good) and result.n_quarantined == len(bad)
    assert result.failed_fraction == pytest.approx(len(bad) / len(expect))
    assert result.passed  # 0.9 allowed
    for key in good:
        assert result.placements[key].startswith("images/")
    for key, cols in expect.items():
        if not cols:
            continue
        where = result.placements[key]
        assert where.startswith(f"quarantine/{result.batch}/files/")
        reason = json.loads((ds / where.replace("/files/", "/reasons/", 1)).with_name(
            Path(where).name + ".json").read_text())
        broken = {f["column"] for f in reason["failed"]}
        assert broken == cols, key
        assert reason["sha256"] == before[key]
        assert all(f["expectation"].startswith("expect_") and f["check"] for f in reason["failed"])
    # the bad mask travels with its image; the sidecar is kept with the data set
    assert result.placements["masks/defect_bad_mask.png"].startswith("quarantine/")
    assert result.placements["labels.csv"] == f"labels/{result.batch}.csv"

    samples = {s.image.name: s for s in load_samples(ds / "manifest.csv")}
    assert len(samples) == SEED_IMAGES + len(good)
    by_key = {Path(result.placements[k]).name: k for k in good}
    defect = samples[Path(result.placements["defect_ok.png"]).name]
    assert defect.label == 1 and defect.mask is not None
    assert read_mask(defect.mask, H, W, image_path=defect.image).sum() == 80
    assert {by_key[n] for n, s in samples.items() if s.split == "test"} == {"test_split.png"}

    report = json.loads((tmp_path / "report" / "intake.json").read_text())
    size = report["bounds"]["size"]  # default policy: tiny images and far aspects only
    assert size["policy"] == "aspect" and size["origin"] == "dataset"
    assert size["aspect"] == pytest.approx([W / H / 4, W / H * 4])
    assert size["width"] == [16, None] and report["drift"] == []
    assert report["bounds"]["mean_min"] > 60.0  # derived from the data set, not params' 10
    assert report["labels_without_file"] == ["not_in_inbox.png"]
    assert report["great_expectations"]["success"] is False
    docs = tmp_path / "report" / "data_docs"
    assert "exdd-intake" in (docs / "index.html").read_text()
    assert list((docs / "validations").rglob("*.html"))


def test_cli_fails_a_broken_batch_and_sidecar_errors_change_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ds, inbox = tmp_path / "ds", tmp_path / "inbox"
    save(inbox / "a.png", texture(1))
    save(inbox / "b.png", np.zeros((H, W), np.uint8))
    (inbox / "c.png").write_bytes(b"")
    (inbox / "labels.csv").write_text("picture,label\na.png,normal\n")
    before = files_in(inbox)
    config = params_file(tmp_path, max_failed_fraction=0.5)
    argv = ["validate", "--inbox", str(inbox), "--dataset", str(ds), "--params", str(config)]

    assert main(argv) == 2  # a sidecar without an image column: refused, nothing touched
    assert "labels.csv" in capsys.readouterr().err
    assert files_in(inbox) == before and files_in(ds) == {}

    (inbox / "labels.csv").unlink()
    assert main(argv + ["--report", str(tmp_path / "rep")]) == 1  # 2 of 3 failed > 0.5
    out = capsys.readouterr().out
    assert "3 image(s), 0 accepted, 3 quarantined (1 held with the failed batch)" in out
    assert "FAILED" in out
    assert files_in(inbox) == {}
    assert not (ds / "manifest.csv").exists()  # the good file is held: nothing to train on
    held = json.loads(next((ds / "quarantine").glob("*/reasons/a.png.json")).read_text())
    assert [f["expectation"] for f in held["failed"]] == ["exdd_batch_passes"]
    assert (tmp_path / "rep" / "intake.json").is_file()

    # A symbolic link is never followed: it stays in the inbox, and the run says so.
    save(tmp_path / "elsewhere.png", texture(3))
    (inbox / "link.png").symlink_to(tmp_path / "elsewhere.png")
    save(inbox / "d.png", texture(4))
    assert main(argv + ["--report", str(tmp_path / "rep-link")]) == 0
    out = capsys.readouterr().out
    assert "1 image(s), 1 accepted" in out
    assert "skipped, left in inbox (a symbolic link, never followed): link.png" in out
    assert [p.name for p in inbox.iterdir()] == ["link.png"]
    (inbox / "link.png").unlink()

    # The inbox is empty now: a quiet night, not a failed batch.
    assert main(argv + ["--report", str(tmp_path / "rep2")]) == 0
    out = capsys.readouterr().out
    assert f"no new data: the inbox {inbox} holds no files" in out and "FAILED" not in out
    # only d.png: a.png stays held with its failed batch until an operator releases it
    assert [s.image.name for s in load_samples(ds / "manifest.csv")] == [
        p.name for p in (ds / "images").iterdir()]
    assert len(load_samples(ds / "manifest.csv")) == 1


def _exdd_validate(inbox: Path, ds: Path, report: Path, config: Path,
                   kill_at: int | None = None) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k != KILL_ENV}
    if kill_at is not None:
        env[KILL_ENV] = str(kill_at)
    cmd = [sys.executable, "-m", "exdd", "validate", "--inbox", str(inbox), "--dataset", str(ds),
           "--report", str(report), "--params", str(config)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_killed_intake_reruns_to_the_same_end_state(tmp_path: Path) -> None:
    config = params_file(tmp_path, max_failed_fraction=0.9)
    params = load_params(config)
    inbox = tmp_path / "inbox"
    # reference: one uninterrupted run
    ref_ds = tmp_path / "ref"
    seed_dataset(ref_ds)
    make_inbox(inbox, ref_ds)
    ref = validate_inbox(str(inbox), ref_ds, tmp_path / "ref-report", params.intake, params.data)
    # the same batch in the same inbox, into a twin data set, crashed three times
    ds, report = tmp_path / "ds", tmp_path / "report"
    seed_dataset(ds)
    make_inbox(inbox, ds)
    original, seeded = files_in(inbox), files_in(ds)

    # 1. a real SIGKILL from outside while it is still planning: the old state stays
    proc = _exdd_validate(inbox, ds, report, config)
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        staged = ds / WORK_DIR / "files"
        if staged.is_dir() and any(staged.iterdir()):
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005)
    assert proc.wait() == -signal.SIGKILL, proc.stderr.read().decode()
    assert not (ds / WORK_DIR / JOURNAL_NAME).exists()
    assert files_in(inbox) == original
    assert {r: d for r, d in files_in(ds).items() if not r.startswith(WORK_DIR)} == seeded

    # 2. killed (test hook: SIGKILL to itself) half-way through the moves
    proc = _exdd_validate(inbox, ds, report, config, kill_at=5)
    assert proc.wait() == -signal.SIGKILL, proc.stderr.read().decode()
    journal = json.loads((ds / WORK_DIR / JOURNAL_NAME).read_text())
    assert files_in(inbox) == original  # nothing leaves the inbox before all is placed
    n_moves = len(journal["moves"])

    # 3. the re-run is killed too, after two inbox files were removed
    proc = _exdd_validate(inbox, ds, report, config, kill_at=n_moves + 1 + 3)
    assert proc.wait() == -signal.SIGKILL, proc.stderr.read().decode()
    left = files_in(inbox)
    gone = set(original) - set(left)
    assert len(gone) == 2 and all(original[k] == left[k] for k in left)
    for key in gone:
        assert sha(ds / ref.placements[key]) == original[key]

    # 4. a clean re-run finishes the job: same result, same data set as the reference
    result = validate_inbox(str(inbox), ds, report, params.intake, params.data)
    assert files_in(inbox) == {}
    assert result.placements == ref.placements and result.batch == ref.batch
    assert (result.n_accepted, result.n_quarantined) == (ref.n_accepted, ref.n_quarantined)
    assert_filed_once(original, ds, result.placements, seeded)
    assert end_state(ds) == end_state(ref_ds)
    assert (report / "intake.json").is_file()
