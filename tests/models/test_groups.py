import numpy as np
import pytest
import tensorflow as tf

import kerastricks  # noqa: F401
from kerastricks.models import (
    build_classifier,
    create_backbone,
    freeze_groups,
    layer_groups,
    set_trainable,
)
from kerastricks.models._family_rules import FAMILY_EXAMPLES, render_doc

IMAGE_SIZE = 32
DOC = "docs/layer_groups.md"


def _names(groups):
    return [group.name for group in groups]


def test_resnet18_classifier_groups(assert_covers_once):
    model = build_classifier("resnet18", 3, input_size=IMAGE_SIZE)
    groups = layer_groups(model)
    assert _names(groups) == ["stem", "layer1", "layer2", "layer3", "layer4", "head"]
    assert [layer.name for layer in groups[0].layers] == ["conv1", "bn1"]
    assert [layer.name for layer in groups[-1].layers] == ["head/logits"]
    assert_covers_once(model, groups)
    merged = layer_groups(model, n=3)
    assert _names(merged) == ["stem..layer2", "layer3..layer4", "head"]
    assert_covers_once(model, merged)
    split = layer_groups(model, n=8)
    assert _names(split)[:4] == ["stem[0]", "stem[1]", "layer1[0]", "layer1[1]"]
    assert_covers_once(model, split)
    with pytest.raises(ValueError, match="n=99"):
        layer_groups(model, n=99)


def test_bare_tfimm_model_puts_its_classifier_last(assert_covers_once):
    model = create_backbone("resnet18", input_size=IMAGE_SIZE, nb_classes=10)
    groups = layer_groups(model)
    assert _names(groups) == ["stem", "layer1", "layer2", "layer3", "layer4", "head"]
    assert groups[-1].variables[0].shape == (512, 10)
    assert_covers_once(model, groups)


def test_efficientnet_groups_by_stage(assert_covers_once):
    model = build_classifier("efficientnet_b0", 3, input_size=IMAGE_SIZE)
    groups = layer_groups(model)
    stages = [f"blocks.{index}" for index in range(7)]
    assert _names(groups) == ["stem", *stages, "neck", "head"]
    assert [layer.name for layer in groups[-2].layers] == ["conv_head", "bn2"]
    assert [layer.name for layer in groups[4].layers] == ["blocks.3.0", "blocks.3.1", "blocks.3.2"]
    assert_covers_once(model, groups)


def test_vit_groups_and_frozen_position_embedding(assert_covers_once):
    model = build_classifier("vit_tiny_patch16_224", 3, input_size=IMAGE_SIZE)
    groups = layer_groups(model)
    blocks = [f"blocks/{index}" for index in range(12)]
    assert _names(groups) == ["stem", *blocks, "neck", "head"]
    loose = sorted(variable.name.split("/")[-1] for variable in groups[0].loose_variables)
    assert loose == ["cls_token:0", "pos_embed:0"]
    assert_covers_once(model, groups)
    set_trainable(model, groups, 1)
    assert [v.name for v in model.trainable_variables] == [
        "head/logits/kernel:0",
        "head/logits/bias:0",
    ]
    assert groups[0].trainable_variables == []
    set_trainable(model, groups, "all")
    assert len(model.trainable_variables) == len(model.weights)
    assert len(groups[0].trainable_variables) == 4  # patch conv kernel, bias, and the two tokens


def test_sequential_model_splits_evenly_with_the_last_layer_as_head(assert_covers_once):
    model = tf.keras.Sequential(
        [
            tf.keras.layers.Conv2D(4, 3, input_shape=(8, 8, 3)),
            tf.keras.layers.BatchNormalization(),
            tf.keras.layers.Flatten(),
            tf.keras.layers.Dense(8),
            tf.keras.layers.Dense(6),
            tf.keras.layers.Dense(2, name="out"),
        ]
    )
    groups = layer_groups(model)
    assert len(groups) == 3
    assert [layer.name for layer in groups[-1].layers] == ["out"]
    assert [len(group.layers) for group in groups] == [2, 2, 1]
    assert_covers_once(model, groups)
    assert len(layer_groups(model, n=5)) == 5


class _Subclassed(tf.keras.Model):
    def __init__(self):
        super().__init__()
        self.scale = self.add_weight(name="scale", shape=(), initializer="ones")
        self.body = tf.keras.Sequential([tf.keras.layers.Dense(4), tf.keras.layers.Dense(4)])
        self.out = tf.keras.layers.Dense(2)

    def call(self, x):
        return self.out(self.body(x * self.scale))


def test_subclassed_model_with_nested_and_loose_variables(assert_covers_once):
    model = _Subclassed()
    model(tf.zeros([1, 3]))
    groups = layer_groups(model, n=2)
    assert _names(groups)[-1] == "head"
    assert groups[-1].layers == [model.out]
    assert groups[0].loose_variables == [model.scale]
    assert_covers_once(model, groups)
    freeze_groups(groups, 1)
    assert {v.ref() for v in model.trainable_variables} == {v.ref() for v in model.out.weights}
    freeze_groups(groups, None)
    assert len(model.trainable_variables) == len(model.weights)


def _moved(before, variables):
    pairs = zip(before, variables, strict=True)
    return [not np.array_equal(old, new.numpy()) for old, new in pairs]


def test_frozen_groups_keep_batchnorm_statistics():
    model = build_classifier("resnet18", 3, input_size=IMAGE_SIZE)
    groups = layer_groups(model)
    set_trainable(model, groups, 1)
    model.compile(tf.keras.optimizers.SGD(0.1), tf.keras.losses.CategoricalCrossentropy(True))
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (4, IMAGE_SIZE, IMAGE_SIZE, 3)).astype("float32")
    labels = np.eye(3, dtype="float32")[[0, 1, 2, 0]]
    stats = [v for v in model.weights if "moving_" in v.name]
    body = [v for group in groups[:-1] for v in group.variables]
    before_stats = [v.numpy().copy() for v in stats]
    before_body = [v.numpy().copy() for v in body]
    before_head = [v.numpy().copy() for v in groups[-1].variables]
    model.fit(images, labels, batch_size=4, epochs=1, verbose=0)
    assert not any(_moved(before_stats, stats))
    assert not any(_moved(before_body, body))
    assert all(_moved(before_head, groups[-1].variables))
    set_trainable(model, groups, "all")
    model.compile(tf.keras.optimizers.SGD(0.1), tf.keras.losses.CategoricalCrossentropy(True))
    model.fit(images, labels, batch_size=4, epochs=1, verbose=0)
    assert all(_moved(before_stats, stats))


def test_freeze_groups_rejects_a_bad_k():
    model = tf.keras.Sequential([tf.keras.layers.Dense(2, input_shape=(3,))])
    with pytest.raises(ValueError, match="received 5"):
        freeze_groups(layer_groups(model), 5)


def test_layer_groups_doc_matches_the_rules():
    with open(DOC, encoding="utf-8") as handle:
        assert handle.read() == render_doc(), (
            f"{DOC} is stale: regenerate it with .venv/bin/python -c "
            '"from kerastricks.models._family_rules import write_doc; write_doc()"'
        )


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(FAMILY_EXAMPLES))
def test_every_family_has_ordered_groups(family, assert_covers_once):
    model = create_backbone(FAMILY_EXAMPLES[family], nb_classes=5)
    groups = layer_groups(model)
    assert len(groups) >= 3
    assert groups[-1].name == "head"
    assert_covers_once(model, groups)
