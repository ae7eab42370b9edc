"""Input geometry: the size follows the data's aspect, explicit sizes and presets win."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from exdd.cli import main
from exdd.config import DataConfig, ModelConfig, load_params
from exdd.data.readers import load_samples
from exdd.errors import ConfigError
from exdd.detector.geometry import resolve_input_size, with_input_size
from exdd.detector.model import ExDD

STRIDE, MIN = 16, 32


def _images(tmp_path: Path, sizes: list[tuple[int, int]]) -> list[Path]:
    paths = []
    for i, (w, h) in enumerate(sizes):
        p = tmp_path / f"{i}.png"
        Image.fromarray(np.full((h, w), 100, np.uint8)).save(p)
        paths.append(p)
    return paths


def test_size_follows_median_aspect_at_the_pixel_budget(tmp_path: Path) -> None:
    # tall parts of several sizes (median height / width 2.5), one odd wide one
    paths = _images(tmp_path, [(500, 1260), (480, 1200), (510, 1270), (900, 300)])
    data = resolve_input_size(DataConfig(), paths, STRIDE, MIN, "bb")
    h, w = data.input_size
    assert h % STRIDE == 0 and w % STRIDE == 0
    assert h > 2 * w  # kept tall, not squashed into a square
    assert abs(h * w - DataConfig().pixel_budget) / DataConfig().pixel_budget < 0.1
    assert abs(h / w - 2.5) < 0.25


def test_explicit_sizes_presets_and_one_side(tmp_path: Path) -> None:
    paths = _images(tmp_path, [(300, 400)])
    explicit = DataConfig(image_height=100, image_width=70)
    assert resolve_input_size(explicit, paths, STRIDE, MIN, "bb").input_size == (100, 70)
    preset = DataConfig(preset="ksdd2")
    assert resolve_input_size(preset, [], STRIDE, MIN, "bb").input_size == (632, 224)
    one_side = DataConfig(image_width=240)
    assert resolve_input_size(one_side, paths, STRIDE, MIN, "bb").input_size == (320, 240)
    assert with_input_size(DataConfig(), "ksdd2").preset == "ksdd2"
    assert with_input_size(DataConfig(), "64x48").input_size == (64, 48)


def test_bad_sizes_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="data.image_height 16 is below bb's minimum input"):
        resolve_input_size(DataConfig(image_height=16, image_width=64), [], STRIDE, MIN, "bb")
    with pytest.raises(ConfigError, match="give HxW"):
        with_input_size(DataConfig(), "huge")
    cfg = tmp_path / "params.yaml"
    cfg.write_text("data:\n  preset: ksdd3\n")
    with pytest.raises(ConfigError, match=r"data.preset.*unknown input size preset 'ksdd3'"):
        load_params(cfg)
    with pytest.raises(ConfigError, match="not resolved"):
        DataConfig().input_size


@pytest.fixture(scope="module")
def demo(small_demo: Path) -> Path:
    return small_demo  # conftest.py: one demo data set for the session


def test_fit_chooses_saves_and_predicts_at_the_data_size(demo: Path, tmp_path: Path) -> None:
    model = ExDD(ModelConfig(runtime={"batch_size": 4}, coreset={"normal": 0.1}),
                 DataConfig(pixel_budget=4096)).fit(load_samples(demo, "train"))
    h, w = model.data.input_size
    assert (h, w) == (80, 48)  # the demo's 64 x 48 (aspect 4 : 3) at 4,096 pixels, stride 16
    model.save(tmp_path / "m")
    loaded = ExDD.load(tmp_path / "m")
    assert loaded.data.input_size == (h, w)
    pred = loaded.predict([s.image for s in load_samples(demo, "test")])
    assert pred.maps.shape[1:] == (h, w)


def test_cli_input_size_flag_and_its_errors(demo: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "params.yaml"
    cfg.write_text("model:\n  runtime: {batch_size: 4}\n  coreset: {normal: 0.1}\n")
    out = tmp_path / "m"
    assert main(["fit", "--data", str(demo), "--out", str(out), "--params", str(cfg),
                 "--input-size", "48x64"]) == 0
    assert "input 48x64" in capsys.readouterr().out
    assert ExDD.load(out).data.input_size == (48, 64)
    for bad, needle in (("16x64", "below efficientnet_lite0's minimum"), ("big", "give HxW")):
        assert main(["fit", "--data", str(demo), "--out", str(tmp_path / "x"), "--params",
                     str(cfg), "--input-size", bad]) == 2
        err = capsys.readouterr().err.strip()
        assert needle in err and len(err.splitlines()) == 1
    assert not (tmp_path / "x").exists()
