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


@pytest.mark.parametrize(
    "raw, key, value, expected",
    [
        ({"train": {"label_smoothing": 1.0}}, "train.label_smoothing", "1.0", "[0, 1)"),
        ({"train": {"label_smoothing": -0.1}}, "train.label_smoothing", "-0.1", "[0, 1)"),
        ({"model": {"head": {"dropout": 1.0}}}, "model.head.dropout", "1.0", "[0, 1)"),
        ({"model": {"head": {"hidden": 0}}}, "model.head.hidden", "0", ">= 1"),
        ({"model": {"head": {"pooling": "mean"}}}, "model.head.pooling", "'mean'", "'avg'"),
        (
            {"train": {"optimizer": {"weight_decay": -0.01}}},
            "train.optimizer.weight_decay",
            "-0.01",
            ">= 0",
        ),
        ({"train": {"ema": 1.0}}, "train.ema", "1.0", "(0, 1)"),
        ({"train": {"ema": 0}}, "train.ema", "0", "(0, 1)"),
        ({"train": {"swa": 0}}, "train.swa", "0", ">= 1"),
        ({"train": {"swa": 1.5}}, "train.swa", "1.5", "(0, 1)"),
        ({"train": {"ema": 0.99, "swa": 0.5}}, "train.ema", "0.99", "pick one"),
        ({"train": {"steps_per_epoch": 0}}, "train.steps_per_epoch", "0", ">= 1"),
        ({"train": {"validation_steps": 0}}, "train.validation_steps", "0", ">= 1"),
        ({"train": {"batch_size": 0}}, "train.batch_size", "0", ">= 1"),
        ({"train": {"accumulate_steps": 0}}, "train.accumulate_steps", "0", ">= 1"),
        ({"train": {"steps_per_execution": 0}}, "train.steps_per_execution", "0", ">= 1"),
        ({"train": {"groups": 0}}, "train.groups", "0", ">= 1"),
        ({"train": {"verbose": 3}}, "train.verbose", "3", "0, 1 or 2"),
        ({"train": {"focal_gamma": -1}}, "train.focal_gamma", "-1", ">= 0"),
        ({"train": {"focal_alpha": 1.5}}, "train.focal_alpha", "1.5", "[0, 1]"),
        ({"train": {"loss": "bce"}}, "train.loss", "'bce'", "'auto'"),
        ({"train": {"strategy": "gpu"}}, "train.strategy", "'gpu'", "'mirrored'"),
        ({"train": {"precision": "fp16"}}, "train.precision", "'fp16'", "'mixed_float16'"),
        ({"train": {"jit_compile": "yes"}}, "train.jit_compile", "'yes'", "'auto'"),
        ({"train": {"stages": []}}, "train.stages", "[]", "at least one stage"),
        ({"train": {"stages": [{"epochs": 0}]}}, "train.stages.0.epochs", "0", ">= 1"),
        ({"train": {"stages": [{"image_size": 4}]}}, "train.stages.0.image_size", "4", ">= 8"),
        ({"train": {"stages": [{"lr": 0}]}}, "train.stages.0.lr", "0", "> 0"),
        (
            {"train": {"stages": [{"unfreeze": "some"}]}},
            "train.stages.0.unfreeze",
            "'some'",
            "head",
        ),
        ({"train": {"stages": [{"unfreeze": 0}]}}, "train.stages.0.unfreeze", "0", ">= 1"),
        ({"train": {"stages": [{"batch_size": -2}]}}, "train.stages.0.batch_size", "-2", ">= 1"),
        (
            {"train": {"recipe": {"name": "finetune"}}},
            "train.recipe.name",
            "'finetune'",
            "fine_tune",
        ),
        ({"train": {"recipe": {"epochs": 0}}}, "train.recipe.epochs", "0", ">= 1"),
        (
            {"train": {"recipe": {"name": "progressive", "fractions": [0.5, 1.5]}}},
            "train.recipe.fractions",
            "1.5",
            "(0, 1]",
        ),
        ({"train": {"lr_mult": {"slise": [1.0]}}}, "train.lr_mult", "slise", "'slice'"),
        ({"data": {"resize": "crop"}}, "data.resize", "'crop'", "'center_crop'"),
        ({"data": {"val_fold": -1}}, "data.val_fold", "-1", ">= 0"),
        ({"data": {"num_classes": 0}}, "data.num_classes", "0", ">= 1"),
        ({"data": {"prepare": "mnist"}}, "data.prepare", "'mnist'", "'digits'"),
        ({"cv": {"folds": []}}, "cv.folds", "[]", "non-empty"),
        ({"cv": {"folds": [1, 1]}}, "cv.folds", "[1, 1]", "unique"),
        ({"cv": {"folds": [-1]}}, "cv.folds", "[-1]", ">= 0"),
        ({"tta": {"transforms": ["hlfip"]}}, "tta.transforms.0", "'hlfip'", "'hflip'"),
        ({"tta": {"transforms": ["scale0"]}}, "tta.transforms.0", "'scale0'", "> 0"),
        ({"tta": {"beta": 1.5}}, "tta.beta", "1.5", "[0, 1]"),
        ({"predict": {"weights": "bset"}}, "predict.weights", "'bset'", "'best'"),
        ({"predict": {"target": "label"}}, "predict.target", "'label'", "'class_name'"),
        ({"pseudo": {"threshold": 2}}, "pseudo.threshold", "2", "(0, 1]"),
        ({"pseudo": {"threshold": 0}}, "pseudo.threshold", "0", "(0, 1]"),
        ({"pseudo": {"rounds": -1}}, "pseudo.rounds", "-1", ">= 0"),
        ({"pseudo": {"top_k": 0}}, "pseudo.top_k", "0", ">= 1"),
        ({"pseudo": {"weight": 0}}, "pseudo.weight", "0", "> 0"),
        ({"pseudo": {"mode": "pool"}}, "pseudo.mode", "'pool'", "'pooled'"),
        ({"pseudo": {"threshold": 0.9, "top_k": 5}}, "pseudo.threshold", "0.9", "not both"),
        ({"name": ""}, "name", "''", "non-empty"),
        ({"augment": [{"mode": "horizontal"}]}, "augment.0", "mode", "'name'"),
    ],
)
def test_out_of_range_values_are_refused_at_load(raw, key, value, expected):
    with pytest.raises(ConfigError) as error:
        from_dict(raw, source="c.yaml")
    message = str(error.value)
    assert message.startswith(f"c.yaml: {key}")
    assert value in message
    assert expected in message


@pytest.mark.parametrize(
    "raw",
    [
        {"train": {"label_smoothing": 0.0, "ema": 0.999, "steps_per_epoch": 1}},
        {"train": {"swa": 3}},
        {"train": {"swa": 0.75}},
        {"tta": {"transforms": ["identity", "hflip", "rot270", "scale1.15", "scale0.9"]}},
        {"tta": {"beta": 0.0}},
        {"pseudo": {"rounds": 0, "threshold": 1.0, "weight": 0.5}},
        {"pseudo": {"top_k": 5}},
        {"cv": {"folds": [0, 2, 4]}},
        {"train": {"recipe": {"name": "progressive", "epochs": 3}}},
        {"train": {"lr_mult": {"layer_decay": 0.75}, "stages": [{"lr_mult": [0.1, 1.0]}]}},
    ],
)
def test_values_in_range_are_accepted(raw):
    from_dict(raw)


def test_a_bad_value_stops_the_cli_before_the_run_folder_exists(tmp_path, capsys):
    from kerastricks.cli import main

    runs = tmp_path / "runs"
    path = write(tmp_path, f"output: {runs}\ntrain:\n  label_smoothing: 1.5\n")
    assert main(["train", path]) == 2
    assert "train.label_smoothing" in capsys.readouterr().err
    assert not runs.exists()


def test_empty_yaml_file_is_an_error_naming_it(tmp_path):
    path = write(tmp_path, "# nothing but a comment\n")
    with pytest.raises(ConfigError, match="empty") as error:
        load_config(path)
    assert path in str(error.value)


def test_duplicate_yaml_keys_are_refused_naming_key_and_line(tmp_path):
    path = write(tmp_path, "name: a\ntrain:\n  batch_size: 8\n  verbose: 0\n  batch_size: 16\n")
    with pytest.raises(ConfigError, match="duplicate key 'batch_size'") as error:
        load_config(path)
    assert "line 5" in str(error.value) and "line 3" in str(error.value)
    assert path in str(error.value)


def test_override_past_the_last_stage_is_an_error(tmp_path):
    path = write(tmp_path, "train:\n  stages:\n    - {epochs: 1, image_size: 32}\n")
    with pytest.raises(ConfigError, match=r"train.stages.5.*1 stage") as error:
        load_config(path, ["train.stages.5.lr=1"])
    assert "train.stages.1" in str(error.value)


def test_override_of_default_stages_counts_the_default_stage(tmp_path):
    path = write(tmp_path, "name: a\n")
    assert len(load_config(path, ["train.stages.0.lr=0.5"]).train.stages) == 1
    assert len(load_config(path, ["train.stages.1.lr=0.5"]).train.stages) == 2
    with pytest.raises(ConfigError, match="train.stages.3"):
        load_config(path, ["train.stages.3.lr=0.5"])


def test_loading_a_bad_config_does_not_import_tensorflow(tmp_path):
    import subprocess
    import sys

    path = write(tmp_path, "tta:\n  transforms: [hlfip]\n")
    code = (
        "import sys\n"
        "from kerastricks.config import ConfigError, load_config\n"
        "try:\n"
        f"    load_config({path!r})\n"
        "except ConfigError as error:\n"
        "    assert 'hflip' in str(error), error\n"
        "else:\n"
        "    raise SystemExit('no error')\n"
        "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_every_named_choice_is_a_literal_in_the_schema_and_checked_from_it():
    import dataclasses

    from kerastricks.config import validate
    from kerastricks.config.validate import check_choices

    config = from_dict({})
    # A config built in code (no YAML) is checked by the same typed choices.
    bad = dataclasses.replace(config, pseudo=dataclasses.replace(config.pseudo, mode="pooledd"))
    with pytest.raises(ConfigError, match=r"pseudo.mode: unknown value 'pooledd'; did you mean"):
        validate(bad)
    stage = dataclasses.replace(config.train.stages[0], unfreeze="heads")
    with pytest.raises(ConfigError, match=r"train.stages.0.unfreeze: unknown value 'heads'"):
        check_choices(dataclasses.replace(config.train, stages=[stage]), "train")
    check_choices(dataclasses.replace(config.train.stages[0], unfreeze=2), "stage")  # an int
    with pytest.raises(ConfigError, match="data.prepare"):
        from_dict({"data": {"prepare": "digit"}})
    assert from_dict({"data": {"prepare": None}}).data.prepare is None


def test_one_head_config_for_yaml_and_models():
    from kerastricks.config import HeadConfig
    from kerastricks.models import HeadConfig as ModelsHeadConfig

    assert ModelsHeadConfig is HeadConfig
    assert from_dict({"model": {"head": {"hidden_activation": "gelu"}}}).model.head == HeadConfig(
        hidden_activation="gelu"
    )
