import pytest
import tensorflow as tf

import kerastricks  # noqa: F401
from kerastricks.models import create_backbone, list_backbones


def test_list_backbones_filters_by_wildcard():
    names = list_backbones("resnet1*")
    assert "resnet18" in names
    assert all(name.startswith("resnet1") for name in names)


def test_unknown_backbone_suggests_closest_names():
    with pytest.raises(ValueError, match=r"Unknown backbone 'resnet18x'.*resnet18"):
        create_backbone("resnet18x")


def test_unknown_tfimm_field_is_named():
    with pytest.raises(ValueError, match="drop_pth_rate"):
        create_backbone("resnet18", drop_pth_rate=0.1)


def test_backbone_gives_pooled_features_without_its_own_dropout():
    backbone = create_backbone("efficientnet_b0", input_size=32)
    assert backbone.cfg.nb_classes == 0
    assert backbone.cfg.drop_rate == 0.0
    assert backbone(tf.zeros([2, 48, 48, 3])).shape == (2, 1280)


def test_pretrained_offline_error_says_to_pass_a_local_file():
    # tfimm needs timm (and the network) for these weights; neither is available in tests.
    with pytest.raises(RuntimeError, match="local weights file"):
        create_backbone("resnet18", weights="pretrained", input_size=32)


def test_missing_weights_file_is_named(tmp_path):
    missing = str(tmp_path / "nope.safetensors")
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        create_backbone("resnet18", weights=missing, input_size=32)
