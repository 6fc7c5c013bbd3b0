"""The private tf-keras attributes kerastricks reads or overrides, in one place.

A tf-keras upgrade that renames one fails here, naming it, before any wrapper misbehaves.
docs/design.md ("Private tf-keras attributes") lists who uses each.
"""

import kerastricks  # noqa: F401  (selects tf-keras before TensorFlow is imported)

# isort: split
import pytest
import tensorflow as tf

NEW_STYLE_OPTIMIZER = (
    "_var_key",
    "_index_dict",
    "_built",
    "_learning_rate",
    "_iterations",
    "_variables",
    "_distribution_strategy",
    "_update_step",
    "_apply_weight_decay",
    "_use_weight_decay",
    "_momentums",
    "_velocities",
    "_no_dependency",
)
LEGACY_OPTIMIZER = ("_create_all_weights", "_get_hyper")
MODEL = ("_trainable_weights", "_non_trainable_weights", "_no_dependency")


@pytest.mark.parametrize("name", NEW_STYLE_OPTIMIZER)
def test_new_style_optimizer_attribute(name):
    variable = tf.Variable([1.0, 2.0])
    optimizer = tf.keras.optimizers.Adam(1e-3)
    optimizer.build([variable])
    assert hasattr(optimizer, name), f"tf-keras Adam has no {name} any more"


@pytest.mark.parametrize("name", LEGACY_OPTIMIZER)
def test_legacy_optimizer_attribute(name):
    assert hasattr(tf.keras.optimizers.legacy.Adam(1e-3), name)


@pytest.mark.parametrize("name", MODEL)
def test_model_attribute(name):
    model = tf.keras.Sequential([tf.keras.Input((2,)), tf.keras.layers.Dense(1)])
    assert hasattr(model, name)
