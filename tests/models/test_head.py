import numpy as np
import pytest
import tensorflow as tf

import kerastricks  # noqa: F401
from kerastricks.models import HeadConfig, build_classifier, create_backbone

IMAGE_SIZE = 32


@pytest.mark.parametrize(("name", "features"), [("resnet18", 512), ("mobilenet_v2_050", 1280)])
def test_head_input_size_comes_from_the_backbone(name, features, pixels):
    model = build_classifier(name, 3, input_size=IMAGE_SIZE)
    assert model.get_layer("head/logits").kernel.shape == (features, 3)
    assert model(pixels).shape == (2, 3)


def test_model_normalises_raw_pixels_inside(pixels):
    backbone = create_backbone("resnet18", input_size=IMAGE_SIZE)
    model = build_classifier(backbone, 4, head={"dropout": 0.0})
    mean = np.array(backbone.cfg.mean, "float32")
    std = np.array(backbone.cfg.std, "float32")
    features = backbone((pixels.numpy() / 255.0 - mean) / std)
    expected = model.get_layer("head/logits")(features)
    np.testing.assert_allclose(model(pixels).numpy(), expected.numpy(), rtol=1e-4, atol=1e-4)
    # CNN inputs stay dynamic: one model serves every stage of progressive resizing.
    assert model.input_shape == (None, None, None, 3)
    assert model(tf.zeros([1, 48, 40, 3])).shape == (1, 4)


def test_avgmax_pooling_is_the_mean_of_both(pixels):
    backbone = create_backbone("resnet18", input_size=IMAGE_SIZE)
    model = build_classifier(backbone, 2, head=HeadConfig(pooling="avgmax", dropout=0.0))
    pooled = tf.keras.Model(model.input, model.get_layer("head/avgmax").output)(pixels)
    normalised = model.get_layer("normalize")(pixels)
    spatial = backbone.forward_features(normalised)
    expected = 0.5 * (tf.reduce_mean(spatial, axis=[1, 2]) + tf.reduce_max(spatial, axis=[1, 2]))
    np.testing.assert_allclose(pooled.numpy(), expected.numpy(), rtol=1e-5, atol=1e-5)


def test_hidden_layer_and_its_size():
    model = build_classifier("resnet18", 5, head={"hidden": 16}, input_size=IMAGE_SIZE)
    assert model.get_layer("head/hidden").kernel.shape == (512, 16)
    assert model.get_layer("head/logits").kernel.shape == (16, 5)


def test_logits_are_float32_under_mixed_float16(pixels):
    tf.keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = build_classifier("resnet18", 3, input_size=IMAGE_SIZE)
        backbone = model.layers[2]
        assert backbone.compute_dtype == "float16"
        assert model(pixels).dtype == tf.float32
        assert model.output.dtype == tf.float32
    finally:
        tf.keras.mixed_precision.set_global_policy("float32")
    assert tf.keras.mixed_precision.global_policy().name == "float32"


def test_transformer_runs_at_its_built_size_only(pixels):
    model = build_classifier("vit_tiny_patch16_224", 3, input_size=IMAGE_SIZE)
    assert model.input_shape == (None, IMAGE_SIZE, IMAGE_SIZE, 3)
    assert model(pixels).shape == (2, 3)
    backbone = model.layers[2]
    with pytest.raises(ValueError, match=r"create_backbone\('vit_tiny_patch16_224', input_size=48"):
        build_classifier(backbone, 3, input_size=48)


def test_bad_head_options_are_named():
    with pytest.raises(ValueError, match="dropuot"):
        build_classifier("resnet18", 3, head={"dropuot": 0.1})
    with pytest.raises(ValueError, match="head.pooling: unknown value 'mean'"):
        build_classifier("resnet18", 3, head=HeadConfig(pooling="mean"))
    with pytest.raises(TypeError, match="Sequential"):
        build_classifier(tf.keras.Sequential([tf.keras.layers.Dense(2)]), 3)
