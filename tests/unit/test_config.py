"""The one config system: params.yaml validates, bad values name the key and the file."""

from pathlib import Path

import pytest
import yaml

from exdd.cli import main
from exdd.config import LineConfig, Params, load_params
from exdd.errors import ConfigError
from exdd.line.workspace import default_params_text

ROOT = Path(__file__).resolve().parents[2]


def test_repository_params_yaml_is_valid_and_matches_defaults_shape() -> None:
    params = load_params(ROOT / "params.yaml")
    assert params.model.features.backbone == "efficientnet_lite0"
    assert params.model.features.projection_dim == 128
    assert params.lines and params.lines[0].name == "demo"
    # every section in the file is a section of Params: the file and the code agree
    assert set(Params.model_fields) >= {"data", "model", "synth", "intake", "gate", "publish"}


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("model:\n  coreset:\n    normal: 1.5\n", "model.coreset.normal"),
        ("model:\n  features:\n    backbone: resnet9000\n", "model.features.backbone"),
        ("model:\n  no_such_key: 1\n", "model.no_such_key"),
        ("data:\n  image_height: -3\n", "data.image_height"),
        # a key of the flat model settings (before the sections) names its new place
        ("model:\n  coreset_normal: 0.1\n", "model.coreset_normal is now model.coreset.normal"),
        ("model:\n  nn_index: hnsw\n", "model.nn_index is now model.search.index"),
        ("model:\n  scoring: reference\n", "model.scoring is now model.scoring.rule"),
        ("model:\n  batch_size: 4\n", "model.batch_size is now model.runtime.batch_size"),
    ],
)
def test_bad_value_is_a_clear_error(tmp_path: Path, text: str, needle: str) -> None:
    cfg = tmp_path / "params.yaml"
    cfg.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_params(cfg)
    assert needle in str(err.value)
    assert str(cfg) in str(err.value)
    assert "\n" not in str(err.value)


def test_params_yaml_is_the_dump_of_the_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    """params.yaml writes out every default (DVC tracks whole sections): it must equal
    ``exdd params dump``, the defaults of Params. Its lines are written out in full too."""
    assert main(["params", "dump"]) == 0
    dumped = yaml.safe_load(capsys.readouterr().out)
    assert dumped.pop("lines") == []
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    lines = raw.pop("lines")
    assert raw == dumped, "params.yaml differs from `exdd params dump`"
    for line in lines:
        assert line == LineConfig.model_validate(line).model_dump(), line["name"]
    # a new workspace's params: the same defaults, each setting with its description
    workspace = default_params_text()
    assert yaml.safe_load(workspace) == dumped
    assert workspace.count("  # ") >= len(dumped)


def test_every_model_setting_has_one_flat_key() -> None:
    """model.json stores the settings flat: every setting of every section has its key."""
    from exdd.detector.settings import FLAT_KEYS, ModelConfig, from_flat, to_flat

    leaves = {(name,) if not isinstance(value, dict) else (name, inner)
              for name, value in ModelConfig().model_dump().items()
              for inner in (value if isinstance(value, dict) else [None])}
    assert set(FLAT_KEYS.values()) == leaves and len(FLAT_KEYS) == len(leaves)
    cfg = ModelConfig(seed=4, search={"index": "hnsw"}, scoring={"rule": "reference"})
    assert from_flat(to_flat(cfg)) == cfg


def test_a_workspace_without_params_is_an_error(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EXDD_PARAMS", raising=False)
    monkeypatch.chdir(tmp_path)
    assert load_params() == Params()  # no workspace: the defaults
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    with pytest.raises(ConfigError, match="params.yaml: not found beside dvc.yaml"):
        load_params()


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(bad)


def test_passwords_in_urls_come_from_the_environment(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from exdd.config import expand_env, params_from_dict
    from exdd.line.registry import Registry, tracking_uri
    from exdd.line.review.verdicts import VerdictStore, store_url

    for section, key in (("review", "db_url"), ("publish", "tracking_uri")):
        with pytest.raises(ConfigError, match=rf"'{section}\.{key}'.*write it as \$\{{ENV_VAR\}}"
                           ) as err:
            params_from_dict({section: {key: "postgresql://exdd:hunter2@db:5432/x"}})
        assert "hunter2" not in str(err.value)
    params = params_from_dict({
        "review": {"db_url": "sqlite:///${EXDD_TEST_DIR}/verdicts.db"},
        "publish": {"tracking_uri": "sqlite:///${EXDD_TEST_DIR}/mlruns.db"}})
    with pytest.raises(ConfigError, match="review.db_url: the environment variable "
                                          "EXDD_TEST_DIR is not set"):
        store_url(params.review, tmp_path)
    monkeypatch.setenv("EXDD_TEST_DIR", str(tmp_path))
    store = VerdictStore(store_url(params.review, tmp_path))  # a real store, where the env says
    store.record("demo", "a.png", "normal", "ana")
    assert (tmp_path / "verdicts.db").is_file()
    assert tracking_uri(params.publish, tmp_path / "ws") == f"sqlite:///{tmp_path}/mlruns.db"
    assert Registry(params, tmp_path).aliases() == {}
    # In the user:password part the value is URL-quoted; elsewhere inserted as is.
    env = {"P": "p@ss:w/rd", "H": "db.local"}
    assert (expand_env("postgresql://exdd:${P}@${H}:5432/x", "x", env)
            == "postgresql://exdd:p%40ss%3Aw%2Frd@db.local:5432/x")
    assert params_from_dict({"publish": {"tracking_uri": "postgresql://u:${P}@h/m"}})
