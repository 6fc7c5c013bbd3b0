"""LR multipliers: exact per-group steps for SGD/Adam/AdamW/RMSprop, XLA, checkpoints."""

import kerastricks  # noqa: F401  (selects tf-keras before TensorFlow is imported)

# isort: split
import numpy as np
import pytest
import tensorflow as tf

from kerastricks.optim import (
    Lookahead,
    RectifiedAdam,
    create_optimizer,
    get_lr_multipliers,
    set_lr_multipliers,
    with_lr_multipliers,
    with_lr_multipliers_by_name,
)

START = [np.array([1.0, -2.0, 3.0], np.float32), np.array([[0.5, 1.5], [-1.0, 2.0]], np.float32)]
TARGET = [np.array([0.0, 1.0, -1.0], np.float32), np.zeros((2, 2), np.float32)]


def _fresh_variables():
    return [tf.Variable(value, name=f"v{i}") for i, value in enumerate(START)]


def _quadratic_steps(optimizer, variables, steps):
    """Runs `steps` steps of 0.5 * ||v - target||^2, whose gradient depends on v."""
    for _ in range(steps):
        grads = [v - t for v, t in zip(variables, TARGET, strict=True)]
        optimizer.apply_gradients(zip(grads, variables, strict=True))
    return [v.numpy() for v in variables]


def test_sgd_moves_each_group_by_multiplier_times_gradient():
    a, b = _fresh_variables()
    c = tf.Variable([4.0], name="ungrouped")
    optimizer = with_lr_multipliers(tf.keras.optimizers.SGD(1.0), [[a], [b]], [0.25, 3.0])
    assert isinstance(optimizer, tf.keras.optimizers.SGD)
    assert type(optimizer).__name__ == "SGD"
    gradients = [tf.ones(3), tf.fill((2, 2), 2.0), tf.constant([1.0])]
    optimizer.apply_gradients(zip(gradients, [a, b, c], strict=True))
    np.testing.assert_allclose(a.numpy() - START[0], -0.25 * 1.0 * np.ones(3), atol=1e-6)
    np.testing.assert_allclose(b.numpy() - START[1], -3.0 * 2.0 * np.ones((2, 2)), atol=1e-6)
    np.testing.assert_allclose(c.numpy(), [3.0], atol=1e-6)


@pytest.mark.parametrize(
    "make",
    [
        lambda lr: tf.keras.optimizers.Adam(lr),
        lambda lr: tf.keras.optimizers.AdamW(lr, weight_decay=0.2),
        lambda lr: tf.keras.optimizers.RMSprop(lr, momentum=0.9),
        lambda lr: tf.keras.optimizers.Adam(
            tf.keras.optimizers.schedules.ExponentialDecay(lr, decay_steps=1, decay_rate=0.5)
        ),
    ],
    ids=["adam", "adamw", "rmsprop_momentum", "adam_schedule"],
)
def test_wrapped_matches_unwrapped_optimizer_with_lr_times_multiplier(make):
    multipliers = [0.1, 2.5]
    wrapped_vars = _fresh_variables()
    wrapped = with_lr_multipliers(make(0.05), [[v] for v in wrapped_vars], multipliers)
    got = _quadratic_steps(wrapped, wrapped_vars, steps=4)
    for group, multiplier in enumerate(multipliers):
        reference_var = [_fresh_variables()[group]]
        reference_target = TARGET[group]
        reference = make(0.05 * multiplier)
        for _ in range(4):
            grad = reference_var[0] - reference_target
            reference.apply_gradients([(grad, reference_var[0])])
        np.testing.assert_allclose(got[group], reference_var[0].numpy(), rtol=1e-5, atol=1e-6)
        # The groups really moved differently from each other.
        assert not np.allclose(got[group], START[group])


def test_adamw_decay_scales_with_multiplier():
    a, b = _fresh_variables()
    optimizer = with_lr_multipliers(
        tf.keras.optimizers.AdamW(0.1, weight_decay=0.5), [[a], [b]], [0.2, 1.0]
    )
    # Zero gradient: Adam's update is 0, so the step is the decoupled decay alone.
    optimizer.apply_gradients([(tf.zeros(3), a), (tf.zeros((2, 2)), b)])
    np.testing.assert_allclose(a.numpy() - START[0], -0.1 * 0.2 * 0.5 * START[0], rtol=1e-5)
    np.testing.assert_allclose(b.numpy() - START[1], -0.1 * 1.0 * 0.5 * START[1], rtol=1e-5)


def test_momentum_sgd_scales_the_whole_step_when_multipliers_change():
    a, b = _fresh_variables()
    optimizer = with_lr_multipliers(
        tf.keras.optimizers.SGD(0.1, momentum=0.9), [[a], [b]], [1.0, 1.0]
    )
    assert not optimizer._lr_scales_step  # lr sits in the momentum buffer: rescale steps
    gradients = [(tf.ones(3), a), (tf.ones((2, 2)), b)]
    optimizer.apply_gradients(gradients)
    set_lr_multipliers(optimizer, [0.5, 0.0])
    optimizer.apply_gradients(gradients)
    # tf_keras SGD: buffer = 0.9 * buffer - lr * g; step 2 of the plain optimizer is -0.19.
    np.testing.assert_allclose(a.numpy(), START[0] - 0.1 - 0.5 * 0.19, atol=1e-6)
    np.testing.assert_allclose(b.numpy(), START[1] - 0.1, atol=1e-6)


@pytest.mark.parametrize(
    ("optimizer", "scales_lr"),
    [
        (tf.keras.optimizers.Adam(), True),
        (tf.keras.optimizers.AdamW(), True),
        (tf.keras.optimizers.SGD(), True),
        (tf.keras.optimizers.SGD(momentum=0.9), False),
        (tf.keras.optimizers.Ftrl(), False),
        (RectifiedAdam(), True),
        (RectifiedAdam(total_steps=10, min_lr=1e-5), False),
    ],
)
def test_cheap_learning_rate_path_only_where_it_is_exact(optimizer, scales_lr):
    variable = tf.Variable([1.0])
    assert with_lr_multipliers(optimizer, [[variable]], [0.5])._lr_scales_step is scales_lr


def test_set_multipliers_between_stages_without_retracing():
    a, b = _fresh_variables()
    optimizer = with_lr_multipliers(tf.keras.optimizers.SGD(1.0), [[a], [b]], [1.0, 1.0])

    @tf.function
    def step():
        optimizer.apply_gradients([(tf.ones(3), a), (tf.ones((2, 2)), b)])

    step()
    traces = step.experimental_get_tracing_count()
    set_lr_multipliers(optimizer, [0.0, 0.5])
    step()
    assert get_lr_multipliers(optimizer) == [0.0, 0.5]
    np.testing.assert_allclose(a.numpy(), START[0] - 1.0, atol=1e-6)
    np.testing.assert_allclose(b.numpy(), START[1] - 1.5, atol=1e-6)
    assert step.experimental_get_tracing_count() == traces


def _small_model(seed=0):
    tf.keras.utils.set_random_seed(seed)
    model = tf.keras.Sequential(
        [
            tf.keras.layers.Dense(8, activation="relu", name="body"),
            tf.keras.layers.Dense(3, name="head"),
        ]
    )
    model.build((None, 5))
    return model


def _data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(16, 5)).astype("float32"), rng.normal(size=(16, 3)).astype("float32")


OPTIMIZERS = {
    "adamw": lambda: tf.keras.optimizers.AdamW(0.01, weight_decay=0.1),
    "sgd_momentum": lambda: tf.keras.optimizers.SGD(0.01, momentum=0.9, weight_decay=0.1),
}


def _fit_small(model_jit, optimizer_jit, multipliers, name):
    model = _small_model()
    optimizer = with_lr_multipliers(
        OPTIMIZERS[name](), [model.layers[0], model.layers[1]], multipliers
    )
    optimizer.jit_compile = optimizer_jit  # tf_keras turns it off on CPU; force it on.
    model.compile(optimizer=optimizer, loss="mse", jit_compile=model_jit)
    x, y = _data()
    model.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False)
    return model


@pytest.mark.parametrize("name", list(OPTIMIZERS))
@pytest.mark.parametrize(("model_jit", "optimizer_jit"), [(True, False), (False, True)])
def test_xla_train_step_gives_the_same_weights(model_jit, optimizer_jit, name):
    multipliers = [0.0, 0.5]
    reference = _fit_small(False, False, multipliers, name)
    compiled = _fit_small(model_jit, optimizer_jit, multipliers, name)
    untouched = _small_model()
    for got, want in zip(compiled.weights, reference.weights, strict=True):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-6)
    # Multiplier 0 froze the body exactly (no update, no decay); the head moved.
    np.testing.assert_array_equal(compiled.layers[0].kernel.numpy(), untouched.layers[0].kernel)
    assert not np.allclose(compiled.layers[1].kernel.numpy(), untouched.layers[1].kernel.numpy())


def test_checkpoint_round_trip_restores_multipliers_and_slots(tmp_path):
    x, y = _data()

    def make():
        model = _small_model()
        optimizer = with_lr_multipliers(
            tf.keras.optimizers.AdamW(0.01), [model.layers[0], model.layers[1]], [1.0, 1.0]
        )
        model.compile(optimizer=optimizer, loss="mse")
        return model, optimizer

    model, optimizer = make()
    set_lr_multipliers(optimizer, [0.3, 2.0])
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
    path = tf.train.Checkpoint(model=model, optimizer=optimizer).write(str(tmp_path / "ckpt"))
    restored_model, restored_optimizer = make()
    tf.train.Checkpoint(model=restored_model, optimizer=restored_optimizer).read(path)
    assert get_lr_multipliers(restored_optimizer) == pytest.approx([0.3, 2.0])
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
    restored_model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
    assert int(restored_optimizer.iterations) == int(optimizer.iterations) == 4
    for got, want in zip(restored_model.weights, model.weights, strict=True):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-6, atol=1e-7)
    for got, want in zip(restored_optimizer.variables, optimizer.variables, strict=True):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-6, atol=1e-7)


def test_regex_groups_and_wrappers():
    a, b = _fresh_variables()
    c = tf.Variable([4.0], name="other")
    optimizer = with_lr_multipliers_by_name(
        tf.keras.mixed_precision.LossScaleOptimizer(Lookahead(tf.keras.optimizers.SGD(1.0))),
        [a, b, c],
        {"^v0": 0.5, "v": 2.0},
    )
    optimizer.apply_gradients([(tf.ones(3), a), (tf.ones((2, 2)), b), (tf.ones(1), c)])
    np.testing.assert_allclose(a.numpy(), START[0] - 0.5, atol=1e-6)
    np.testing.assert_allclose(b.numpy(), START[1] - 2.0, atol=1e-6)
    np.testing.assert_allclose(c.numpy(), [3.0], atol=1e-6)


def test_errors_name_the_problem():
    a, b = _fresh_variables()
    with pytest.raises(ValueError, match="2 variable groups but 1 multipliers"):
        with_lr_multipliers(tf.keras.optimizers.SGD(), [[a], [b]], [1.0])
    with pytest.raises(ValueError, match="'v0:0' is in LR group 0 and in group 1"):
        with_lr_multipliers(tf.keras.optimizers.SGD(), [[a], [a, b]], [1.0, 1.0])
    with pytest.raises(ValueError, match=r"\['nomatch'\] match no variable"):
        with_lr_multipliers_by_name(tf.keras.optimizers.SGD(), [a], {"nomatch": 1.0})
    with pytest.raises(ValueError, match="finite and >= 0"):
        with_lr_multipliers(tf.keras.optimizers.SGD(), [[a]], [-1.0])
    with pytest.raises(ValueError, match="has no LR multipliers"):
        get_lr_multipliers(tf.keras.optimizers.SGD())
    built = tf.keras.optimizers.SGD()
    built.build([a])
    with pytest.raises(ValueError, match="already built"):
        with_lr_multipliers(built, [[a]], [1.0])
    optimizer = with_lr_multipliers(tf.keras.optimizers.SGD(), [[a]], [1.0])
    with pytest.raises(ValueError, match="2 multipliers"):
        set_lr_multipliers(optimizer, [1.0, 2.0])


def test_keras_format_save_loads_the_plain_optimizer_with_its_state(tmp_path):
    x, y = _data()
    model = _small_model()
    ranger = create_optimizer("ranger", 0.01, model=model)
    with_lr_multipliers(ranger, [model.layers[0], model.layers[1]], [0.1, 1.0])
    model.compile(optimizer=ranger, loss="mse")
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    model.save(tmp_path / "model.keras")
    loaded = tf.keras.models.load_model(tmp_path / "model.keras")
    # Same classes as before wrapping (multipliers are re-applied by the caller).
    assert type(loaded.optimizer) is Lookahead
    assert type(loaded.optimizer.inner_optimizer) is RectifiedAdam
    assert int(loaded.optimizer.iterations) == 2


def test_mixed_precision_loss_scale_optimizer():
    x, y = _data()
    tf.keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = _small_model()
        start = [w.numpy() for w in model.weights]
        optimizer = tf.keras.mixed_precision.LossScaleOptimizer(tf.keras.optimizers.AdamW(0.01))
        with_lr_multipliers(optimizer, [model.layers[0], model.layers[1]], [0.0, 1.0])
        model.compile(optimizer=optimizer, loss="mse")
        model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    finally:
        tf.keras.mixed_precision.set_global_policy("float32")
    moved = [float(np.abs(w.numpy() - s).max()) for w, s in zip(model.weights, start, strict=True)]
    # Body frozen by its multiplier 0; Adam's first step moves the head by ~lr everywhere.
    assert moved[:2] == [0.0, 0.0]
    assert moved[2] == pytest.approx(0.01, rel=0.05)
