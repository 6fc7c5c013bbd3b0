"""create_optimizer registry and errors; weight decay kept off biases and norms."""

import kerastricks  # noqa: F401  (selects tf-keras before TensorFlow is imported)

# isort: split
import numpy as np
import pytest
import tensorflow as tf

from kerastricks.optim import (
    Lookahead,
    create_optimizer,
    exclude_bias_and_norm_from_decay,
    list_optimizers,
    with_lr_multipliers,
)


def _conv_bn_model():
    tf.keras.utils.set_random_seed(0)
    inputs = tf.keras.Input((6, 6, 2))
    x = tf.keras.layers.Conv2D(4, 3, name="conv")(inputs)
    x = tf.keras.layers.BatchNormalization(name="bn")(x)
    x = tf.keras.layers.GlobalAveragePooling2D()(x)
    outputs = tf.keras.layers.Dense(3, name="head")(x)
    model = tf.keras.Model(inputs, outputs)
    # Non-default values so that a decay step on them would be visible.
    bn = model.get_layer("bn")
    bn.gamma.assign(tf.fill(bn.gamma.shape, 1.5))
    bn.beta.assign(tf.fill(bn.beta.shape, 0.5))
    model.get_layer("head").bias.assign(tf.fill((3,), 2.0))
    return model


# With zero gradients one step is decay alone: w * (1 - lr * wd) for AdamW and for RAdam
# (its first step is SGD with momentum, m = 0, plus tfa's `wd * w`); LAMB's update is
# `wd * w` rescaled by the trust ratio ||w|| / ||wd * w|| = 1 / wd, so w * (1 - lr).
DECAY_FACTOR = {"lamb": 1 - 0.1}


@pytest.mark.parametrize(
    "name", ["adamw", "lookahead_adamw", "adamw_multipliers", "radam", "lamb", "ranger"]
)
def test_decay_skips_biases_and_norms(name):
    model = _conv_bn_model()
    if name == "adamw_multipliers":
        optimizer = create_optimizer("adamw", 0.1, weight_decay=0.5, model=model)
        with_lr_multipliers(optimizer, [model.layers[1:3], model.layers[3:]], [1.0, 1.0])
    else:
        optimizer = create_optimizer(name, 0.1, weight_decay=0.5, model=model)
    before = {v.name: v.numpy() for v in model.trainable_variables}
    zeros = [tf.zeros_like(v) for v in model.trainable_variables]
    optimizer.apply_gradients(zip(zeros, model.trainable_variables, strict=True))
    decayed = 0
    for variable in model.trainable_variables:
        old = before[variable.name]
        if variable.shape.rank <= 1:
            np.testing.assert_array_equal(variable.numpy(), old, err_msg=variable.name)
        else:
            factor = DECAY_FACTOR.get(name, 1 - 0.1 * 0.5)
            np.testing.assert_allclose(variable.numpy(), old * factor, rtol=1e-6)
            decayed += 1
    assert decayed == 2  # conv and head kernels; 4 one-dimensional variables kept


def test_exclusion_keeps_earlier_exclusions_and_refuses_built_optimizers():
    model = _conv_bn_model()
    optimizer = tf.keras.optimizers.AdamW(0.1, weight_decay=0.5)
    optimizer.exclude_from_weight_decay(var_names=["head"])
    excluded = exclude_bias_and_norm_from_decay(optimizer, model)
    assert len(excluded) == 4
    head_kernel = model.get_layer("head").kernel
    assert not optimizer._use_weight_decay(head_kernel)
    assert optimizer._use_weight_decay(model.get_layer("conv").kernel)
    optimizer.build(model.trainable_variables)
    with pytest.raises(ValueError, match="already built"):
        exclude_bias_and_norm_from_decay(optimizer, model)


def test_registry_builds_every_name_with_float_or_schedule():
    schedule = tf.keras.optimizers.schedules.CosineDecay(1e-3, decay_steps=10)
    assert list_optimizers() == sorted(
        ["adam", "adamw", "lamb", "lookahead_adamw", "radam", "ranger", "rmsprop", "sgd"]
    )
    for name in list_optimizers():
        for learning_rate in (3e-4, schedule):
            optimizer = create_optimizer(name, learning_rate=learning_rate)
            assert isinstance(optimizer, tf.keras.optimizers.Optimizer)
            variable = tf.Variable([1.0, 2.0])
            optimizer.apply_gradients([(tf.constant([0.5, -0.5]), variable)])
            assert not np.allclose(variable.numpy(), [1.0, 2.0]), name
    sgd = create_optimizer("sgd", 0.1)
    assert (sgd.momentum, sgd.nesterov) == (0.9, True)
    assert create_optimizer("adam", 0.1, weight_decay=0).weight_decay is None
    ranger = create_optimizer("ranger", 0.1, sync_period=4, beta_2=0.99)
    assert isinstance(ranger, Lookahead) and ranger.sync_period == 4
    assert ranger.inner_optimizer.beta_2 == 0.99


def test_errors_name_the_bad_value_and_the_choices():
    with pytest.raises(ValueError, match="Unknown optimizer 'adamww'. Did you mean 'adamw'"):
        create_optimizer("adamww")
    with pytest.raises(TypeError, match="does not take momentum.*Accepted arguments:.*beta_1"):
        create_optimizer("adamw", momentum=0.9)
    with pytest.raises(TypeError, match="does not take sync_period"):
        create_optimizer("adamw", sync_period=3)
    with pytest.raises(ValueError, match="weight_decay=-1"):
        create_optimizer("adamw", weight_decay=-1)
