"""Preflight: range checks also hold for configs built in Python, and paths go through
tf.io.gfile (a `ram://` file stands for `gs://`)."""

import dataclasses
import os
import uuid

import pytest
import tensorflow as tf

import kerastricks  # noqa: F401
from kerastricks.config import ConfigError
from kerastricks.config.names import DATASETS
from kerastricks.datasets import PREPARERS
from kerastricks.train.preflight import preflight, prepare_records


def ram_folder() -> str:
    return f"ram://kerastricks-test-{uuid.uuid4().hex[:8]}"


def test_weights_file_on_a_gfile_filesystem_is_found(make_config):
    weights = f"{ram_folder()}/model.weights.h5"
    with tf.io.gfile.GFile(weights, "wb") as f:
        f.write(b"not read by preflight")
    inputs = preflight(make_config(model={"weights": weights}))
    assert inputs.num_train > 0


def test_missing_weights_on_a_gfile_filesystem_are_named(make_config):
    weights = f"{ram_folder()}/missing.weights.h5"
    with pytest.raises(ConfigError, match=f"model.weights: file not found: {weights}"):
        preflight(make_config(model={"weights": weights}))


def test_records_on_a_gfile_filesystem_are_resolved(make_config, digits_records):
    records = f"{ram_folder()}/records"
    tf.io.gfile.makedirs(records)
    for name in tf.io.gfile.listdir(digits_records):
        tf.io.gfile.copy(os.path.join(digits_records, name), f"{records}/{name}")
    local = preflight(make_config())
    remote = preflight(make_config(data={"records": records}))
    assert (remote.num_train, remote.num_val) == (local.num_train, local.num_val)


def test_prepare_writes_the_digits_to_a_gfile_filesystem_once(make_config, capsys):
    records = f"{ram_folder()}/records"
    config = make_config(data={"records": records, "prepare": "digits"})
    prepare_records(config)
    assert tf.io.gfile.exists(f"{records}/manifest.json")
    assert "writing the built-in 'digits' records" in capsys.readouterr().out
    prepare_records(config)
    assert "writing" not in capsys.readouterr().out


def test_a_config_built_in_python_is_validated_again(make_config):
    config = make_config()
    bad = dataclasses.replace(config, train=dataclasses.replace(config.train, ema=1.5))
    with pytest.raises(ConfigError, match=r"train.ema: expected a value in \(0, 1\), got 1.5"):
        preflight(bad)


def test_the_built_in_datasets_are_the_names_the_config_accepts():
    assert set(PREPARERS) == set(DATASETS)
