"""Config loading: schema errors name the key, overrides apply, the resolved config round-trips."""

import pytest
import yaml

import kerastricks  # noqa: F401
from kerastricks.config import ConfigError, from_dict, load_config, save_config, to_dict


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return str(path)


def test_unknown_key_names_path_and_suggests(tmp_path):
    path = write(tmp_path, "train:\n  batchsize: 32\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    message = str(error.value)
    assert "train.batchsize" in message
    assert "did you mean train.batch_size" in message
    assert path in message


def test_unknown_top_level_key_suggests():
    with pytest.raises(ConfigError, match="did you mean model"):
        from_dict({"modle": {}})


@pytest.mark.parametrize(
    "raw, key, expected",
    [
        ({"train": {"batch_size": "big"}}, "train.batch_size", "expected int"),
        ({"train": {"stages": [{"epochs": 1.5}]}}, "train.stages.0.epochs", "expected int"),
        ({"model": {"head": {"dropout": "x"}}}, "model.head.dropout", "expected float"),
        ({"train": {"stages": {"epochs": 1}}}, "train.stages", "expected a list"),
        ({"data": {"cache": 3}}, "data.cache", "bool or str"),
        ({"train": {"batch_size": True}}, "train.batch_size", "expected int"),
    ],
)
def test_wrong_type_names_key_value_and_type(raw, key, expected):
    with pytest.raises(ConfigError) as error:
        from_dict(raw)
    assert key in str(error.value)
    assert expected in str(error.value)


def test_missing_file_names_path(tmp_path):
    missing = str(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="config file not found: .*nope.yaml"):
        load_config(missing)


def test_unsafe_yaml_tag_is_refused(tmp_path):
    path = write(tmp_path, "name: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="unsafe or unknown YAML tag") as error:
        load_config(path)
    assert "line 1" in str(error.value)


def test_overrides_apply_with_yaml_types(tmp_path):
    path = write(tmp_path, "name: a\ntrain:\n  stages:\n    - {epochs: 1, image_size: 32}\n")
    config = load_config(
        path, ["train.batch_size=8", "train.stages.0.lr=3e-3", "train.stages.1.epochs=2", "name=b"]
    )
    assert config.train.batch_size == 8
    assert config.train.stages[0].lr == pytest.approx(3e-3)
    assert config.train.stages[0].image_size == 32
    assert len(config.train.stages) == 2 and config.train.stages[1].epochs == 2
    assert config.name == "b"


def test_override_unknown_key_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="train.epochz"):
        load_config(write(tmp_path, "{}"), ["train.epochz=3"])


def test_saved_config_round_trips(tmp_path):
    config = from_dict({"name": "x", "train": {"lr_mult": {"slice": [1e-4, 1e-3]}}})
    out = str(tmp_path / "run" / "config.yaml")
    save_config(config, out)
    again = load_config(out)
    assert to_dict(again) == to_dict(config)
    assert yaml.safe_load(open(out))["train"]["batch_size"] == 64


def test_the_shipped_demo_config_is_valid():
    config = load_config("configs/digits.yaml")
    assert config.name == "digits"
    assert config.data.prepare == "digits"
