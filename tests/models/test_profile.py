import pytest

import kerastricks  # noqa: F401
from kerastricks.models import profile_backbones


def test_profile_one_tiny_backbone(capsys):
    table = profile_backbones("resnet18", image_size=32, batch_size=2, steps=1, warmup=1)
    assert list(table.columns) == ["backbone", "params", "train_img_per_s", "infer_img_per_s"]
    assert table["backbone"].tolist() == ["resnet18"]
    # timm's resnet18 without fc, BN moving statistics (9,600), the 10-class head.
    assert table["params"].iloc[0] == 11_176_512 + 9_600 + 512 * 10 + 10
    assert table["train_img_per_s"].iloc[0] > 0
    assert table["infer_img_per_s"].iloc[0] > 0
    out = capsys.readouterr().out
    # A line before and after timing the backbone, then the table once.
    assert "profile [1/1] resnet18: building" in out
    assert "profile [1/1] resnet18: train" in out
    assert out.count("train_img_per_s") == 1


def test_profile_quiet_prints_nothing(capsys):
    profile_backbones("resnet18", image_size=32, batch_size=2, steps=1, warmup=0, verbose=False)
    assert capsys.readouterr().out == ""


def test_unknown_backbone_fails_before_any_timing():
    with pytest.raises(ValueError, match="resnet18"):
        profile_backbones(["resnet18", "resnet18x"], steps=1)
