"""The one config system: params.yaml validates, bad values name the key and the file."""

from pathlib import Path

import pytest

from exdd.config import Params, load_params
from exdd.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_repository_params_yaml_is_valid_and_matches_defaults_shape() -> None:
    params = load_params(ROOT / "params.yaml")
    assert params.model.backbone == "efficientnet_lite0"
    assert params.model.projection_dim == 128
    assert params.lines and params.lines[0].name == "demo"
    # every section in the file is a section of Params: the file and the code agree
    assert set(Params.model_fields) >= {"data", "model", "synth", "intake", "gate", "publish"}


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("model:\n  coreset_normal: 1.5\n", "model.coreset_normal"),
        ("model:\n  backbone: resnet9000\n", "model.backbone"),
        ("model:\n  no_such_key: 1\n", "model.no_such_key"),
        ("data:\n  image_height: -3\n", "data.image_height"),
    ],
)
def test_bad_value_is_a_clear_error(tmp_path: Path, text: str, needle: str) -> None:
    cfg = tmp_path / "params.yaml"
    cfg.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_params(cfg)
    assert needle in str(err.value)
    assert str(cfg) in str(err.value)


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(bad)
