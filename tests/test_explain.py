import kerastricks  # noqa: F401  (selects tf-keras before TensorFlow is imported)

# isort: split
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from kerastricks.explain import grad_cam, save_grad_cam_grid

SIZE = 32


def _blob_images(corners: list[tuple[int, int]], size: int = SIZE) -> np.ndarray:
    """Dim noise with one bright 8x8 square per image, its top-left at the given corner."""
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 20, size=(len(corners), size, size, 3)).astype(np.float32)
    for image, (row, col) in zip(images, corners, strict=True):
        image[row : row + 8, col : col + 8] = 255.0
    return images


def _set_positive_weights(model: tf.keras.Model) -> None:
    """Conv: a positive box filter, so activations follow brightness; Dense: +1 / -1."""
    for layer in model.submodules:
        if isinstance(layer, tf.keras.layers.Conv2D):
            kernel, bias = layer.get_weights()
            layer.set_weights([np.full_like(kernel, 1.0 / kernel[..., 0].size), bias * 0])
        if isinstance(layer, tf.keras.layers.Dense):
            kernel, bias = layer.get_weights()
            kernel[:, 0], kernel[:, 1] = 1.0, -1.0
            layer.set_weights([kernel, bias * 0])


def _masked_model() -> tf.keras.Model:
    """Only the top-left quadrant of the conv features reaches the logits."""
    inputs = tf.keras.Input((SIZE, SIZE, 3))
    features = tf.keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv")(inputs)
    mask = np.zeros((1, SIZE, SIZE, 1), np.float32)
    mask[:, : SIZE // 2, : SIZE // 2] = 1.0
    masked = tf.keras.layers.Lambda(lambda x: x * mask, name="mask")(features)
    pooled = tf.keras.layers.GlobalAveragePooling2D()(masked)
    model = tf.keras.Model(inputs, tf.keras.layers.Dense(2)(pooled))
    _set_positive_weights(model)
    return model


class TinyBackbone(tf.keras.Model):
    """Stand-in for a tfimm model: subclassed, with `forward_features`."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.conv1 = tf.keras.layers.Conv2D(4, 3, padding="same", name="conv1")
        self.act1 = tf.keras.layers.ReLU()
        self.conv2 = tf.keras.layers.Conv2D(8, 3, strides=2, padding="same", name="conv2")
        self.act2 = tf.keras.layers.ReLU()

    def forward_features(self, x, training=False):
        return self.act2(self.conv2(self.act1(self.conv1(x))))

    def call(self, x, training=False):
        return self.forward_features(x, training=training)


def _classifier_around(backbone: tf.keras.Model, size: int, pool: bool) -> tf.keras.Model:
    """The shape of a kerastricks classifier: [0, 255] -> normalise -> backbone -> head."""
    inputs = tf.keras.Input((size, size, 3))
    x = tf.keras.layers.Normalization(mean=[127.5] * 3, variance=[127.5**2] * 3)(inputs)
    x = backbone(x)
    if pool:
        x = tf.keras.layers.GlobalAveragePooling2D()(x)
    return tf.keras.Model(inputs, tf.keras.layers.Dense(2)(x))


def _peak(heatmap: np.ndarray) -> tuple[int, int]:
    row, col = np.unravel_index(np.argmax(heatmap), heatmap.shape)
    return int(row), int(col)


def test_heatmap_peaks_in_the_only_region_that_reaches_the_logits():
    # The bright square sits in the bottom-right, but only the top-left quadrant counts.
    images = _blob_images([(20, 20), (4, 4)])
    heatmaps = grad_cam(_masked_model(), images, class_index=0)
    assert heatmaps.shape == (2, SIZE, SIZE) and heatmaps.dtype == np.float32
    for heatmap in heatmaps:
        row, col = _peak(heatmap)
        assert row < SIZE // 2 and col < SIZE // 2
        assert heatmap.max() == pytest.approx(1.0)
        assert heatmap[SIZE // 2 + 2 :, :].max() < 0.05
    # In the second image the square lies in the counted quadrant: the peak is on it.
    row, col = _peak(heatmaps[1])
    assert 2 <= row <= 13 and 2 <= col <= 13


def test_explicit_class_index_and_all_zero_maps_stay_zero():
    model = _masked_model()
    images = _blob_images([(4, 4), (4, 4)])
    # Class 1 has Dense weights -1: nothing raises its logit, the ReLU'd map is all zero.
    against = grad_cam(model, images, class_index=[1, 1])
    assert np.all(against == 0.0) and not np.isnan(against).any()
    mixed = grad_cam(model, images, class_index=np.array([0, 1]))
    assert mixed[0].max() == pytest.approx(1.0) and np.all(mixed[1] == 0.0)
    by_name = grad_cam(model, images, class_index=0, layer="conv")
    by_object = grad_cam(model, images, class_index=0, layer=model.get_layer("conv"))
    np.testing.assert_allclose(by_name, by_object)
    assert by_name.min() >= 0.0 and by_name.max() == pytest.approx(1.0)


def test_negative_evidence_is_cut_to_zero_not_rescaled():
    # Channel 0 follows brightness, channel 1 is a constant 100; class 0 = c0 - 0.5 * c1,
    # so the weighted map is positive on the bright square and negative on the background.
    inputs = tf.keras.Input((SIZE, SIZE, 3))
    features = tf.keras.layers.Conv2D(2, 3, padding="same", name="conv")(inputs)
    pooled = tf.keras.layers.GlobalAveragePooling2D()(features)
    model = tf.keras.Model(inputs, tf.keras.layers.Dense(1, use_bias=False, name="dense")(pooled))
    kernel = np.zeros((3, 3, 3, 2), np.float32)
    kernel[..., 0] = 1.0 / 27
    model.get_layer("conv").set_weights([kernel, np.array([0.0, 100.0], np.float32)])
    model.get_layer("dense").set_weights([np.array([[1.0], [-0.5]], np.float32)])
    heatmap = grad_cam(model, _blob_images([(12, 12)]))[0]
    assert heatmap.min() == 0.0 and heatmap.max() == pytest.approx(1.0)
    assert np.all(heatmap[:8] == 0.0) and heatmap[14:18, 14:18].min() > 0.9


def test_predicted_class_is_the_default():
    model = _masked_model()
    images = _blob_images([(4, 4)])
    assert np.argmax(model(images).numpy()[0]) == 0
    np.testing.assert_allclose(grad_cam(model, images), grad_cam(model, images, class_index=0))


def test_nested_subclassed_backbone_is_searched_and_localises_the_object():
    model = _classifier_around(TinyBackbone(name="backbone"), SIZE, pool=True)
    _set_positive_weights(model)
    images = _blob_images([(20, 4), (4, 20)])
    heatmaps = grad_cam(model, images, class_index=0)
    for heatmap, (top, left) in zip(heatmaps, [(20, 4), (4, 20)], strict=True):
        row, col = _peak(heatmap)
        assert top - 2 <= row <= top + 9 and left - 2 <= col <= left + 9
    # Every activation is positive and class 1 weighs them all by -1: no positive evidence.
    assert np.all(grad_cam(model, images, class_index=1) == 0.0)
    inner = grad_cam(model, images, class_index=0, layer="conv2")
    assert inner.shape == (2, SIZE, SIZE) and _peak(inner[0])[0] >= 16


def test_tfimm_resnet18_inside_a_functional_classifier_gives_sane_maps():
    tfimm = pytest.importorskip("tfimm")
    size = 64  # resnet18's last feature map is 2x2 here (1x1 at 32 px)
    tf.keras.utils.set_random_seed(0)
    backbone = tfimm.create_model("resnet18", pretrained=False, nb_classes=0)
    model = _classifier_around(backbone, size, pool=False)  # backbone pools itself
    images = np.random.default_rng(1).uniform(0, 255, (3, size, size, 3)).astype(np.float32)
    heatmaps = grad_cam(model, images)
    assert heatmaps.shape == (3, size, size)
    assert not np.isnan(heatmaps).any()
    assert heatmaps.min() >= 0.0 and heatmaps.max() <= 1.0
    # The automatic choice is the backbone's final block, inside the subclassed model.
    np.testing.assert_allclose(heatmaps, grad_cam(model, images, layer="layer4/1"), atol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"layer": "nope"}, "No layer named 'nope'"),
        ({"class_index": 5}, "out of range"),
        ({"class_index": [0, 1, 0]}, "one int per image"),
        ({"layer": "dense"}, "has no 4-D output"),
    ],
)
def test_grad_cam_errors_name_the_value(kwargs, message):
    inputs = tf.keras.Input((8, 8, 3))
    x = tf.keras.layers.Conv2D(2, 3)(inputs)
    x = tf.keras.layers.GlobalAveragePooling2D()(x)
    model = tf.keras.Model(inputs, tf.keras.layers.Dense(2, name="dense")(x))
    with pytest.raises(ValueError, match=message):
        grad_cam(model, np.zeros((2, 8, 8, 3), np.float32), **kwargs)


def test_grid_puts_confident_mistakes_first_and_writes_a_png(tmp_path):
    model = _masked_model()
    images = _blob_images([(4, 4)] * 5)
    labels = np.array([0, 1, 0, 1, 0])
    probabilities = np.array([[0.9, 0.1], [0.7, 0.3], [0.4, 0.6], [0.95, 0.05], [0.8, 0.2]])
    # Mistakes: 1 (0.7), 2 (0.6), 3 (0.95) -> 3, 1, 2; then the right ones 0, 4.
    path = tmp_path / "grid" / "grad_cam.png"
    order = save_grad_cam_grid(
        model, images, labels, ["whale", "sea"], str(path), probabilities=probabilities
    )
    assert order.tolist() == [3, 1, 2, 0, 4]
    with Image.open(path) as png:
        assert png.format == "PNG" and png.size[0] > 200
    assert [p.name for p in path.parent.iterdir()] == ["grad_cam.png"]
    order = save_grad_cam_grid(model, images, np.eye(2)[labels], ["whale", "sea"], str(path), 2)
    assert len(order) == 2


def test_grid_checks_labels_and_class_names_before_running_the_model(tmp_path):
    images = _blob_images([(4, 4)] * 2)
    with pytest.raises(ValueError, match="one row per image"):
        save_grad_cam_grid(
            _masked_model(),
            images,
            [0, 1],
            ["a", "b", "c"],
            str(tmp_path / "x.png"),
            probabilities=np.full((2, 2), 0.5),
        )
    with pytest.raises(ValueError, match=r"class indices in \[0, 2\)"):
        save_grad_cam_grid(_masked_model(), images, [0, 2], ["a", "b"], str(tmp_path / "x.png"))


def test_model_built_under_a_strategy_is_explained_like_a_plain_one(tmp_path):
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        mirrored = _masked_model()
    assert mirrored.distribute_strategy is strategy
    images = _blob_images([(4, 4), (20, 20), (4, 20)])
    np.testing.assert_allclose(grad_cam(mirrored, images), grad_cam(_masked_model(), images))
    order = save_grad_cam_grid(
        mirrored, images, [0, 1, 0], ["whale", "sea"], str(tmp_path / "g.png")
    )
    assert sorted(order.tolist()) == [0, 1, 2]
