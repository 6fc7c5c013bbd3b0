"""One rule for the optimizer inside the wrappers, for the callbacks and the LR multipliers."""

import kerastricks  # noqa: F401  (selects tf-keras before TensorFlow is imported)

# isort: split
import tensorflow as tf

from kerastricks.optim import Lookahead, get_lr_multipliers, with_lr_multipliers
from kerastricks.optim.inner import innermost_optimizer, optimizer_chain


def test_innermost_goes_through_loss_scaling_and_lookahead():
    adam = tf.keras.optimizers.Adam(1e-3)
    wrapped = tf.keras.mixed_precision.LossScaleOptimizer(Lookahead(adam))
    assert innermost_optimizer(wrapped) is adam
    assert innermost_optimizer(adam) is adam


def test_chain_lists_every_wrapper_level_outermost_first():
    adam = tf.keras.optimizers.Adam(1e-3)
    lookahead = Lookahead(adam)
    wrapped = tf.keras.mixed_precision.LossScaleOptimizer(lookahead)
    chain = optimizer_chain(wrapped)
    assert [id(o) for o in chain] == [id(wrapped), id(lookahead), id(adam)]


def test_lr_multipliers_land_on_the_same_innermost_optimizer():
    adam = tf.keras.optimizers.Adam(1e-3)
    wrapped = tf.keras.mixed_precision.LossScaleOptimizer(Lookahead(adam))
    layers = [tf.keras.layers.Dense(2), tf.keras.layers.Dense(1)]
    model = tf.keras.Sequential([tf.keras.Input((3,)), *layers])
    assert model.built
    with_lr_multipliers(wrapped, [[layers[0]], [layers[1]]], [0.1, 1.0])
    assert get_lr_multipliers(adam) == get_lr_multipliers(wrapped)
