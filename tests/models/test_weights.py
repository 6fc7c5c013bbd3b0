import importlib.util

import numpy as np
import pytest
import tensorflow as tf
from safetensors.numpy import save_file

import kerastricks  # noqa: F401
from kerastricks.models import create_backbone, read_timm_state_dict, timm_state_dict

IMAGE_SIZE = 32


def _randomise(model: tf.keras.Model, seed: int = 0) -> None:
    """Non-default values everywhere (BN statistics too), so a no-op load cannot pass."""
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        values = rng.normal(0.0, 0.05, variable.shape)
        if "moving_variance" in variable.name:
            values = np.abs(values) + 0.5
        variable.assign(values.astype("float32"))


def _timm_file(model, path, extra=None):
    state = timm_state_dict(model)
    state.update(extra or {})
    save_file(state, str(path))
    return str(path)


@pytest.fixture(scope="module")
def resnet_source():
    model = create_backbone("resnet18", input_size=IMAGE_SIZE)
    _randomise(model)
    return model


def test_timm_names_and_pytorch_layout(resnet_source):
    state = timm_state_dict(resnet_source)
    assert state["conv1.weight"].shape == (64, 3, 7, 7)
    assert state["bn1.running_var"].shape == (64,)
    assert state["layer1.0.conv1.weight"].shape == (64, 64, 3, 3)


def test_safetensors_round_trip_gives_the_same_features(resnet_source, pixels, tmp_path):
    # timm files also hold the classifier and BN batch counters: both are ignored.
    extra = {
        "fc.weight": np.zeros((1000, 512), "float32"),
        "fc.bias": np.zeros((1000,), "float32"),
        "bn1.num_batches_tracked": np.zeros((), "int64"),
    }
    path = _timm_file(resnet_source, tmp_path / "resnet18.safetensors", extra)
    loaded = create_backbone("resnet18", weights=path, input_size=IMAGE_SIZE)
    fresh = create_backbone("resnet18", input_size=IMAGE_SIZE)
    expected = resnet_source(pixels, training=False).numpy()
    np.testing.assert_allclose(loaded(pixels).numpy(), expected, rtol=1e-5, atol=1e-5)
    assert not np.allclose(fresh(pixels).numpy(), expected, atol=1e-3)


def test_depthwise_kernels_round_trip(pixels, tmp_path):
    source = create_backbone("mobilenet_v2_050", input_size=IMAGE_SIZE)
    _randomise(source, seed=1)
    state = timm_state_dict(source)
    assert state["blocks.1.0.conv_dw.weight"].shape == (48, 1, 3, 3)  # PyTorch depthwise layout
    path = _timm_file(source, tmp_path / "mobilenet.safetensors")
    loaded = create_backbone("mobilenet_v2_050", weights=path, input_size=IMAGE_SIZE)
    np.testing.assert_allclose(loaded(pixels).numpy(), source(pixels).numpy(), rtol=1e-4, atol=1e-4)


def test_vit_checkpoint_for_224_is_interpolated_to_a_smaller_size(tmp_path):
    source = create_backbone("vit_tiny_patch16_224")  # timm's own size: 14 x 14 patches
    _randomise(source, seed=2)
    path = _timm_file(source, tmp_path / "vit.safetensors")
    loaded = create_backbone("vit_tiny_patch16_224", weights=path, input_size=IMAGE_SIZE)
    by_name = {variable.name.split("/", 1)[1]: variable for variable in loaded.weights}
    assert by_name["pos_embed:0"].shape == (1, 1 + 2 * 2, 192)
    for variable in source.weights:
        name = variable.name.split("/", 1)[1]
        if name != "pos_embed:0":
            np.testing.assert_array_equal(by_name[name].numpy(), variable.numpy(), err_msg=name)


def test_mismatched_timm_file_names_every_bad_tensor(resnet_source, tmp_path):
    state = timm_state_dict(resnet_source)
    del state["layer2.0.bn1.running_mean"]
    state["layer3.1.conv2.weight"] = np.zeros((256, 256, 1, 1), "float32")
    state["layer5.0.conv1.weight"] = np.zeros((8, 8, 3, 3), "float32")
    path = tmp_path / "bad.safetensors"
    save_file(state, str(path))
    with pytest.raises(ValueError) as caught:
        create_backbone("resnet18", weights=str(path), input_size=IMAGE_SIZE)
    message = str(caught.value)
    assert "missing from the file 1: layer2.0.bn1.running_mean" in message
    assert "layer3.1.conv2.weight (file (256, 256, 1, 1), model (3, 3, 256, 256))" in message
    assert "not in the model 1: layer5.0.conv1.weight" in message


def test_keras_weights_round_trip_and_mismatch(resnet_source, pixels, tmp_path):
    path = str(tmp_path / "resnet18.weights.h5")
    resnet_source.save_weights(path)
    loaded = create_backbone("resnet18", weights=path, input_size=IMAGE_SIZE)
    np.testing.assert_allclose(
        loaded(pixels).numpy(), resnet_source(pixels).numpy(), rtol=1e-5, atol=1e-5
    )
    with pytest.raises(ValueError, match=r"does not fit backbone 'resnet18'.*layer4"):
        create_backbone(
            "resnet18", weights=path, input_size=IMAGE_SIZE, nb_channels=(64, 128, 256, 256)
        )


@pytest.mark.skipif(importlib.util.find_spec("torch") is not None, reason="torch is installed")
def test_pth_without_torch_names_the_package(tmp_path):
    path = tmp_path / "model.pth"
    path.write_bytes(b"not read")
    with pytest.raises(ImportError, match="'torch' package"):
        read_timm_state_dict(str(path))
