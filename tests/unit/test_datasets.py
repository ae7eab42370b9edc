"""Readers: KSDD2 layout and manifest CSV, and the bad-input errors users will hit."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from exdd.data.readers import load_samples, read_image, read_mask
from exdd.errors import DataError


def _png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def _ksdd2(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for i, defect in enumerate([False, True]):
            img = (rng.random((40, 24)) * 255).astype(np.uint8)
            mask = np.zeros((40, 24), np.uint8)
            if defect:
                mask[10:20, 5:10] = 255
            _png(root / split / f"{i:05d}.png", img)
            _png(root / split / f"{i:05d}_GT.png", mask)
    return root


def test_ksdd2_layout_labels_from_masks(tmp_path: Path) -> None:
    root = _ksdd2(tmp_path / "ksdd2")
    samples = load_samples(root)
    assert len(samples) == 4
    assert [s.label for s in load_samples(root, "train")] == [0, 1]
    assert all(s.mask is not None and s.mask.exists() for s in samples)


def test_manifest_csv_relative_paths_and_extra_columns(tmp_path: Path) -> None:
    root = _ksdd2(tmp_path / "d")
    csv = tmp_path / "d" / "manifest.csv"
    csv.write_text(
        "image,mask,label,split,extra\n"
        "train/00000.png,,normal,train,x\n"
        "test/00001.png,test/00001_GT.png,defect,test,y\n"
    )
    samples = load_samples(csv)
    assert [(s.label, s.split) for s in samples] == [(0, "train"), (1, "test")]
    assert samples[0].mask is None
    assert samples[1].image == root / "test" / "00001.png"


def test_resize_any_mode(tmp_path: Path) -> None:
    rgba = _png(tmp_path / "a.png", np.full((30, 50, 4), 200, np.uint8))
    img = read_image(rgba, 64, 32)
    assert img.shape == (64, 32, 3) and img.dtype == np.float32
    assert np.allclose(img, 200 / 255, atol=1e-3)


@pytest.mark.parametrize("case", ["missing_mask", "empty_split", "truncated", "text", "mask_size",
                                  "bad_label"])
def test_bad_input_names_the_file(tmp_path: Path, case: str) -> None:
    root = _ksdd2(tmp_path / "k")
    if case == "missing_mask":
        (root / "train" / "00001_GT.png").unlink()
        with pytest.raises(DataError, match="00001.png: missing ground-truth mask"):
            load_samples(root)
    elif case == "empty_split":
        csv = root / "m.csv"
        csv.write_text("image,mask,label,split\ntrain/00000.png,,normal,train\n")
        with pytest.raises(DataError, match="test split is empty"):
            load_samples(csv, "test")
    elif case == "truncated":
        p = root / "train" / "00000.png"
        p.write_bytes(p.read_bytes()[:60])
        with pytest.raises(DataError, match="00000.png: unreadable image"):
            read_image(p, 32, 32)
    elif case == "text":
        p = root / "t.png"
        p.write_text("not an image")
        with pytest.raises(DataError, match="t.png: unreadable image"):
            read_image(p, 32, 32)
    elif case == "mask_size":
        _png(root / "test" / "00001_GT.png", np.zeros((10, 10), np.uint8))
        with pytest.raises(DataError, match="does not match image"):
            read_mask(root / "test" / "00001_GT.png", 32, 32, image_path=root / "test" / "00001.png")
    elif case == "bad_label":
        csv = root / "m.csv"
        csv.write_text("image,mask,label,split\ntrain/00000.png,,weird,train\n")
        with pytest.raises(DataError, match="m.csv:2: unknown label"):
            load_samples(csv)
