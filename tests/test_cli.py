"""The `kerastricks` verbs, called in-process through `kerastricks.cli.main`."""

import os

import pytest
from PIL import Image

import kerastricks  # noqa: F401
from kerastricks.cli import main
from kerastricks.config import save_config


@pytest.fixture
def config_file(make_config, tmp_path):
    def write(**sections):
        config = make_config(**sections)
        path = str(tmp_path / "config.yaml")
        save_config(config, path)
        return config, path

    return write


def test_bad_key_exits_2_naming_the_key(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  stagez: []\n")
    assert main(["train", str(path)]) == 2
    assert "train.stagez" in capsys.readouterr().err


def test_unknown_backbone_is_reported_before_training(config_file, capsys):
    _, path = config_file(model={"backbone": "resnet1800"})
    assert main(["train", path]) == 2
    error = capsys.readouterr().err
    assert "model.backbone" in error and "resnet18" in error


def test_missing_records_name_the_path(config_file, tmp_path, capsys):
    _, path = config_file(data={"records": str(tmp_path / "nowhere")})
    assert main(["train", path]) == 2
    assert "nowhere" in capsys.readouterr().err


def test_train_then_explain_and_show_batch(config_file, tmp_path, capsys):
    config, path = config_file(
        augment=[{"name": "affine", "rotate": 10, "p": 0.5}], train={"explain": True}
    )
    assert main(["train", path, "--set", "train.stages.0.image_size=32"]) == 0
    out = capsys.readouterr().out
    run_dir = os.path.join(config.output, config.name)
    assert f"run folder: {run_dir}" in out
    assert os.path.exists(os.path.join(run_dir, "plots", "gradcam_stage1.png"))
    grid = str(tmp_path / "cam.png")
    assert main(["explain", path, "--run", run_dir, "--out", grid, "--images", "4"]) == 0
    assert Image.open(grid).size[0] > 100
    batch = str(tmp_path / "batch.png")
    assert main(["show-batch", path, "--out", batch]) == 0
    assert Image.open(batch).size[0] > 100


def test_lr_find_prints_suggestions_and_writes_the_plot(config_file, tmp_path, capsys):
    _, path = config_file()
    plot = str(tmp_path / "lr.png")
    assert main(["lr-find", path, "--steps", "12", "--out", plot]) == 0
    out = capsys.readouterr().out
    assert "suggested lr (valley)" in out
    assert os.path.getsize(plot) > 1000


def test_profile_prints_a_table(capsys):
    assert (
        main(
            [
                "profile",
                "--backbones",
                "resnet18",
                "--image-size",
                "32",
                "--batch-size",
                "4",
                "--steps",
                "1",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "resnet18" in out and "train_img_per_s" in out


def test_predict_needs_records(config_file, capsys):
    _, path = config_file()
    assert main(["predict", path, "--run", "nowhere"]) == 2
    assert "--records" in capsys.readouterr().err


@pytest.mark.parametrize(
    "override, key",
    [
        ("train.batch_size=0", "train.batch_size"),
        ("train.stages.0.batch_size=-2", "train.stages.0.batch_size"),
        ("train.accumulate_steps=0", "train.accumulate_steps"),
    ],
)
def test_non_positive_counts_are_refused_naming_the_key(config_file, capsys, override, key):
    _, path = config_file()
    assert main(["train", path, "--set", override]) == 2
    assert f"{key}: expected >= 1" in capsys.readouterr().err
