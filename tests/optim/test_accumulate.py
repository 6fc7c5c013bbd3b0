"""Gradient accumulation: one update of k micro-batches equals one update of the large batch."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

import kerastricks  # noqa: F401
from kerastricks.optim import accumulate_gradients, accumulation_steps, with_lr_multipliers

RNG = np.random.default_rng(0)
X = RNG.normal(size=(32, 5)).astype("float32")
Y = RNG.normal(size=(32, 3)).astype("float32")
W = RNG.uniform(0.2, 2.0, size=(32,)).astype("float32")


def _model() -> tf.keras.Model:
    tf.keras.utils.set_random_seed(0)
    inputs = tf.keras.Input((5,))
    hidden = tf.keras.layers.Dense(8, activation="tanh", name="body")(inputs)
    return tf.keras.Model(inputs, tf.keras.layers.Dense(3, name="head")(hidden))


def _fit(steps: int, optimizer_fn, jit: bool = False, epochs: int = 1):
    model = _model()
    start = [w.numpy() for w in model.weights]
    if steps > 1:
        accumulate_gradients(model, steps)
    optimizer = optimizer_fn(model)
    model.compile(optimizer=optimizer, loss="mse", metrics=["mae"], jit_compile=jit)
    history = model.fit(
        X, Y, sample_weight=W, batch_size=16, epochs=epochs, shuffle=False, verbose=0
    )
    return model, start, history.history


def test_accumulated_sgd_update_equals_the_large_batch_update():
    def sgd(model):
        return tf.keras.optimizers.SGD(0.1)

    plain, start, plain_logs = _fit(1, sgd, epochs=2)
    accumulated, _, logs = _fit(4, sgd, epochs=2)
    assert type(accumulated).__name__ == "Functional"
    assert accumulation_steps(accumulated) == 4
    # 2 epochs x 2 batches of 16 = 4 updates, not 16 micro-steps.
    assert int(accumulated.optimizer.iterations.numpy()) == 4
    for got, want, before in zip(accumulated.weights, plain.weights, start, strict=True):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-6)
        assert not np.allclose(got.numpy(), before)
    np.testing.assert_allclose(logs["loss"], plain_logs["loss"], rtol=1e-5)
    np.testing.assert_allclose(logs["mae"], plain_logs["mae"], rtol=1e-5)


def test_accumulation_with_lr_multipliers_adam_and_xla():
    def adam_with_multipliers(model):
        optimizer = tf.keras.optimizers.Adam(0.01)
        groups = [model.get_layer("body"), model.get_layer("head")]
        return with_lr_multipliers(optimizer, groups, [0.0, 2.0])

    plain, start, _ = _fit(1, adam_with_multipliers, jit=True)
    accumulated, _, _ = _fit(2, adam_with_multipliers, jit=True)
    assert int(accumulated.optimizer.iterations.numpy()) == 2
    for index, (got, want) in enumerate(zip(accumulated.weights, plain.weights, strict=True)):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-6)
        moved = not np.array_equal(got.numpy(), start[index])
        assert moved == (index >= 2)  # body has multiplier 0


def test_accumulation_under_mixed_precision():
    tf.keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        plain, start, _ = _fit(1, lambda m: tf.keras.optimizers.SGD(0.1))
        accumulated, _, _ = _fit(2, lambda m: tf.keras.optimizers.SGD(0.1))
    finally:
        tf.keras.mixed_precision.set_global_policy("float32")
    assert isinstance(accumulated.optimizer, tf.keras.mixed_precision.LossScaleOptimizer)
    assert int(accumulated.optimizer.iterations.numpy()) == 2
    for got, want, before in zip(accumulated.weights, plain.weights, start, strict=True):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=2e-3, atol=2e-3)
        assert not np.allclose(got.numpy(), before)


def test_checkpoint_layout_is_the_plain_models(tmp_path):
    accumulated, _, _ = _fit(2, lambda m: tf.keras.optimizers.SGD(0.1))
    path = tf.train.Checkpoint(model=accumulated).write(str(tmp_path / "ckpt"))
    plain = _model()
    tf.train.Checkpoint(model=plain).read(path).assert_existing_objects_matched()
    for got, want in zip(plain.weights, accumulated.weights, strict=True):
        np.testing.assert_array_equal(got.numpy(), want.numpy())
    # steps=1 turns it off again: a batch of 3 no longer needs to split.
    accumulate_gradients(accumulated, 1)
    accumulated.fit(X[:3], Y[:3], batch_size=3, verbose=0)
    assert int(accumulated.optimizer.iterations.numpy()) == 3


def test_bad_arguments_are_named():
    model = _model()
    for bad in (0, 2.0, True):
        with pytest.raises(ValueError, match=f"steps={bad!r}"):
            accumulate_gradients(model, bad)
    accumulate_gradients(model, 4)
    model.compile(optimizer=tf.keras.optimizers.SGD(0.1), loss="mse")
    data = tf.data.Dataset.from_tensor_slices((X, Y)).batch(10, drop_remainder=True)
    with pytest.raises(ValueError, match="batch of 10"):
        model.fit(data, verbose=0)

    class Custom(tf.keras.Model):
        def train_step(self, data):
            return {}

    with pytest.raises(ValueError, match="Custom defines its own train_step"):
        accumulate_gradients(Custom(), 2)


# Logical devices must be configured before TensorFlow initialises, so in a fresh interpreter.
MIRRORED = textwrap.dedent(
    """
    import json
    import kerastricks
    import numpy as np
    import tensorflow as tf
    from kerastricks.optim import accumulate_gradients, with_lr_multipliers

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 5)).astype("float32")
    y = rng.normal(size=(32, 3)).astype("float32")

    def fit(strategy, steps):
        with strategy.scope():
            tf.keras.utils.set_random_seed(0)
            model = tf.keras.Sequential([
                tf.keras.layers.Dense(8, activation="tanh"), tf.keras.layers.Dense(3),
            ])
            model.build((None, 5))
            if steps > 1:
                accumulate_gradients(model, steps)
            optimizer = with_lr_multipliers(
                tf.keras.optimizers.SGD(0.1), [model.layers[0], model.layers[1]], [0.5, 1.0]
            )
            model.compile(optimizer=optimizer, loss="mse")
        data = tf.data.Dataset.from_tensor_slices((x, y)).batch(16, drop_remainder=True)
        model.fit(data, epochs=2, verbose=0)
        return [w.numpy() for w in model.weights], int(optimizer.iterations.numpy())

    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    got, updates = fit(mirrored, 2)
    want, _ = fit(tf.distribute.get_strategy(), 1)
    print(json.dumps({
        "replicas": mirrored.num_replicas_in_sync, "updates": updates,
        "error": max(float(np.abs(a - b).max()) for a, b in zip(got, want)),
    }))
    """
)


def test_accumulation_under_two_replica_mirrored_strategy():
    result = subprocess.run(
        [sys.executable, "-c", MIRRORED], capture_output=True, text=True, timeout=240
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["replicas"] == 2
    assert report["updates"] == 4
    assert report["error"] < 1e-5
