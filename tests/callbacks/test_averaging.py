"""EMA and SWA callbacks and update_bn: averages checked against numpy, checkpoint round trips."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

import kerastricks  # noqa: F401
from kerastricks.callbacks import ModelEMA, StochasticWeightAveraging, enable_ema, update_bn
from kerastricks.optim import accumulate_gradients, with_lr_multipliers

RNG = np.random.default_rng(0)
X = RNG.normal(size=(32, 5)).astype("float32")
Y = RNG.normal(size=(32, 2)).astype("float32")


def _model(seed: int = 0, batch_norm: bool = False) -> tf.keras.Model:
    tf.keras.utils.set_random_seed(seed)
    layers = [tf.keras.layers.Dense(6, activation="relu", name="body")]
    if batch_norm:
        layers.append(tf.keras.layers.BatchNormalization(name="bn"))
    layers.append(tf.keras.layers.Dense(2, name="head"))
    model = tf.keras.Sequential(layers)
    model.build((None, 5))
    return model


class _Recorder(tf.keras.callbacks.Callback):
    """Raw trainable weights after every batch and at every epoch end (before averaging)."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[list[np.ndarray]] = []
        self.epochs: list[list[np.ndarray]] = []

    def on_train_batch_end(self, batch, logs=None):
        self.batches.append([w.numpy() for w in self.model.trainable_weights])

    def on_test_begin(self, logs=None):
        # Listed before the averaging callback: sees the raw weights of the finished epoch.
        self.epochs.append([w.numpy() for w in self.model.trainable_weights])


def _ema_model(momentum: float, jit: bool = True, accumulate: int = 1):
    model = accumulate_gradients(_model(), accumulate)
    optimizer = tf.keras.optimizers.Adam(0.05)
    optimizer = with_lr_multipliers(optimizer, [model.layers[0], model.layers[1]], [0.5, 1.0])
    enable_ema(optimizer, momentum)
    optimizer.build(model.trainable_variables)
    model.compile(optimizer=optimizer, loss="mse", jit_compile=jit)
    return model, optimizer


@pytest.mark.parametrize("accumulate", [1, 2])
def test_ema_equals_numpy_average_and_validation_uses_it(accumulate):
    # With accumulation the average moves once per update (per batch of 8), not per micro-batch.
    model, _ = _ema_model(0.7, accumulate=accumulate)
    start = [w.numpy() for w in model.trainable_weights]
    recorder, ema = _Recorder(), ModelEMA()
    history = model.fit(
        X, Y, batch_size=8, epochs=2, shuffle=False, verbose=0,
        validation_data=(X[:8], Y[:8]), callbacks=[recorder, ema],
    )  # fmt: skip
    assert len(recorder.batches) == 8
    expected = start
    for raw in recorder.batches:
        expected = [0.7 * e + 0.3 * w for e, w in zip(expected, raw, strict=True)]
    raw_final = [w.numpy() for w in model.trainable_weights]
    # fit ended on the raw weights (tf_keras would have written the average in).
    for got, want in zip(raw_final, recorder.batches[-1], strict=True):
        np.testing.assert_array_equal(got, want)
    with ema.averaged_weights():
        averaged = [w.numpy() for w in model.trainable_weights]
        val_averaged = model.evaluate(X[:8], Y[:8], verbose=0)
    for got, want in zip(averaged, expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # The raw weights come back, and they differ from the average.
    for got, want in zip(model.trainable_weights, raw_final, strict=True):
        np.testing.assert_array_equal(got.numpy(), want)
    assert not np.allclose(averaged[0], raw_final[0])
    val_raw = model.evaluate(X[:8], Y[:8], verbose=0)
    assert history.history["val_loss"][-1] == pytest.approx(val_averaged, rel=1e-5)
    assert abs(val_raw - val_averaged) > 1e-4


def test_ema_survives_a_checkpoint_round_trip(tmp_path):
    model, optimizer = _ema_model(0.5, jit=False)
    model.fit(X, Y, batch_size=8, epochs=1, verbose=0)
    path = tf.train.Checkpoint(model=model, optimizer=optimizer).write(str(tmp_path / "ckpt"))
    ema = ModelEMA()
    ema.set_model(model)
    with ema.averaged_weights():
        saved = [w.numpy() for w in model.weights]
    fresh, fresh_optimizer = _ema_model(0.5, jit=False)
    status = tf.train.Checkpoint(model=fresh, optimizer=fresh_optimizer).read(path)
    status.assert_existing_objects_matched()
    restored_ema = ModelEMA()
    restored_ema.set_model(fresh)
    with restored_ema.averaged_weights():
        for got, want in zip(fresh.weights, saved, strict=True):
            np.testing.assert_array_equal(got.numpy(), want)


def test_ema_needs_the_optimizer_average():
    model = _model()
    model.compile(optimizer=tf.keras.optimizers.SGD(0.1), loss="mse")
    with pytest.raises(ValueError, match="enable_ema"):
        model.fit(X, Y, epochs=1, verbose=0, callbacks=[ModelEMA()])
    built = tf.keras.optimizers.SGD(0.1)
    built.build(model.trainable_variables)
    with pytest.raises(ValueError, match="already built without EMA"):
        enable_ema(built, 0.9)
    with pytest.raises(ValueError, match="momentum=1.5"):
        enable_ema(tf.keras.optimizers.SGD(0.1), 1.5)


def test_swa_is_the_mean_of_epoch_weights_and_survives_a_checkpoint(tmp_path):
    model = _model()
    model.compile(optimizer=tf.keras.optimizers.SGD(0.05), loss="mse")
    recorder = _Recorder()
    swa = StochasticWeightAveraging(swa_epoch_start=2)
    history = model.fit(
        X, Y, batch_size=8, epochs=4, shuffle=False, verbose=0,
        validation_data=(X[:8], Y[:8]), callbacks=[recorder, swa],
    )  # fmt: skip
    assert int(swa.state.count.numpy()) == 3
    expected = [np.mean(ws, axis=0) for ws in zip(*recorder.epochs[1:], strict=True)]
    with swa.averaged_weights():
        averaged = [w.numpy() for w in model.trainable_weights]
        val_averaged = model.evaluate(X[:8], Y[:8], verbose=0)
    for got, want in zip(averaged, expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert history.history["val_loss"][-1] == pytest.approx(val_averaged, rel=1e-5)
    assert not np.allclose(averaged[0], model.trainable_weights[0].numpy())

    path = tf.train.Checkpoint(model=model, swa=swa.state).write(str(tmp_path / "ckpt"))
    fresh = _model(seed=1)
    fresh_swa = StochasticWeightAveraging(swa_epoch_start=2)
    status = tf.train.Checkpoint(model=fresh, swa=fresh_swa.build(fresh)).read(path)
    status.assert_existing_objects_matched()
    fresh_swa.set_model(fresh)
    assert int(fresh_swa.state.count.numpy()) == 3
    assert fresh_swa.finalize()
    for got, want in zip(fresh.trainable_weights, expected, strict=True):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-6)


def test_swa_start_follows_lightning():
    assert StochasticWeightAveraging(3).start_epoch() == 2
    assert StochasticWeightAveraging(0.5).start_epoch(total_epochs=10) == 4
    assert StochasticWeightAveraging(0.05, total_epochs=10).start_epoch() == 0
    for bad in (0, 1.0, True, -0.5):
        with pytest.raises(ValueError, match="swa_epoch_start"):
            StochasticWeightAveraging(bad)
    with pytest.raises(ValueError, match="total_epochs"):
        StochasticWeightAveraging(0.5).start_epoch()


def test_update_bn_sets_the_data_mean_and_touches_nothing_else():
    model = _model(batch_norm=True)
    bn = model.get_layer("bn")
    bn.moving_mean.assign(tf.fill([6], 5.0))
    others = {w.name: w.numpy() for w in model.weights if "moving" not in w.name}
    dataset = tf.data.Dataset.from_tensor_slices((X, Y)).batch(8)
    assert update_bn(model, dataset) == 4
    kernel, bias = (w.numpy() for w in model.get_layer("body").weights)
    bn_input = np.maximum(X @ kernel + bias, 0.0)
    np.testing.assert_allclose(bn.moving_mean.numpy(), bn_input.mean(axis=0), rtol=1e-5, atol=1e-6)
    # tf_keras BN (not fused, 2-D input) moves towards the biased batch variance.
    batch_vars = [bn_input[i : i + 8].var(axis=0) for i in range(0, 32, 8)]
    np.testing.assert_allclose(
        bn.moving_variance.numpy(), np.mean(batch_vars, axis=0), rtol=1e-4, atol=1e-6
    )
    assert bn.momentum == 0.99
    for w in model.weights:
        if "moving" not in w.name:
            np.testing.assert_array_equal(w.numpy(), others[w.name])
    with pytest.raises(ValueError, match="steps="):
        update_bn(model, dataset.repeat())


@pytest.mark.parametrize("shape", [(5,), (3, 3, 2)], ids=["dense_2d", "conv_4d"])
def test_update_bn_variance_is_biased_on_2d_and_unbiased_like_torch_on_conv(shape):
    rng = np.random.default_rng(1)
    x = (rng.normal(size=(16, *shape)) * 2.0 + 1.0).astype("float32")
    model = tf.keras.Sequential([tf.keras.layers.BatchNormalization(name="bn")])
    model.build((None, *shape))
    assert update_bn(model, tf.data.Dataset.from_tensor_slices(x).batch(4)) == 4
    channels = shape[-1]
    batches = [x[i : i + 4].reshape(-1, channels) for i in range(0, 16, 4)]
    # torch's update_bn: equal-weight mean of each batch's unbiased (ddof=1) variance.
    unbiased = np.mean([b.var(axis=0, ddof=1) for b in batches], axis=0)
    biased = np.mean([b.var(axis=0) for b in batches], axis=0)
    n = batches[0].shape[0]  # values per feature and batch: 4 (2-D), 36 (4-D)
    np.testing.assert_allclose(biased, unbiased * (n - 1) / n, rtol=1e-6)
    got = model.get_layer("bn").moving_variance.numpy()
    np.testing.assert_allclose(got, biased if len(shape) == 1 else unbiased, rtol=1e-5)
    assert np.abs(got - (unbiased if len(shape) == 1 else biased)).min() > 1e-2


def test_swa_recomputes_bn_for_the_average():
    model = _model(batch_norm=True)
    model.compile(optimizer=tf.keras.optimizers.SGD(0.05), loss="mse")
    bn_data = tf.data.Dataset.from_tensor_slices((X, Y)).batch(16)
    swa = StochasticWeightAveraging(1, bn_data=bn_data)
    model.fit(X, Y, batch_size=8, epochs=2, verbose=0, callbacks=[swa])
    raw_mean = model.get_layer("bn").moving_mean.numpy()
    with swa.averaged_weights():
        kernel, bias = (w.numpy() for w in model.get_layer("body").weights)
        expected = np.maximum(X @ kernel + bias, 0.0).mean(axis=0)
        got = model.get_layer("bn").moving_mean.numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(model.get_layer("bn").moving_mean.numpy(), raw_mean)


# Logical devices must be configured before TensorFlow initialises, so in a fresh interpreter.
MIRRORED = textwrap.dedent(
    """
    import json
    import kerastricks
    import numpy as np
    import tensorflow as tf
    from kerastricks.callbacks import ModelEMA, StochasticWeightAveraging, enable_ema

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 5)).astype("float32")
    y = rng.normal(size=(32, 2)).astype("float32")
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        tf.keras.utils.set_random_seed(0)
        model = tf.keras.Sequential([
            tf.keras.layers.Dense(6, activation="relu"), tf.keras.layers.BatchNormalization(),
            tf.keras.layers.Dense(2),
        ])
        model.build((None, 5))
        start = [w.numpy() for w in model.trainable_weights]
        optimizer = enable_ema(tf.keras.optimizers.SGD(0.05), 0.6)
        optimizer.build(model.trainable_variables)
        model.compile(optimizer=optimizer, loss="mse")
    raw, epochs = [], []
    record = tf.keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda b, l: raw.append([w.numpy() for w in model.trainable_weights]),
        on_epoch_end=lambda e, l: epochs.append([w.numpy() for w in model.trainable_weights]),
    )
    bn_data = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    ema = ModelEMA()
    swa = StochasticWeightAveraging(2, bn_data=bn_data)
    model.fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0,
              callbacks=[record, ema, swa])
    expected = start
    for w in raw:
        expected = [0.6 * e + 0.4 * r for e, r in zip(expected, w)]
    with ema.averaged_weights():
        got_ema = [w.numpy() for w in model.trainable_weights]
    with swa.averaged_weights():
        got_swa = [w.numpy() for w in model.trainable_weights]
        kernel, bias = (w.numpy() for w in model.layers[0].weights)
        bn_mean = np.maximum(x @ kernel + bias, 0).mean(0)
        got_bn = model.layers[1].moving_mean.numpy()
    swa_expected = [np.mean(ws, axis=0) for ws in zip(*epochs[1:])]
    print(json.dumps({
        "replicas": strategy.num_replicas_in_sync, "steps": len(raw),
        "ema": max(float(np.abs(a - b).max()) for a, b in zip(got_ema, expected)),
        "swa": max(float(np.abs(a - b).max()) for a, b in zip(got_swa, swa_expected)),
        "bn": float(np.abs(got_bn - bn_mean).max()),
        "moved": float(np.abs(got_ema[0] - start[0]).max()),
    }))
    """
)


def test_ema_swa_and_update_bn_under_two_replica_mirrored_strategy():
    result = subprocess.run(
        [sys.executable, "-c", MIRRORED], capture_output=True, text=True, timeout=240
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["replicas"] == 2
    assert report["steps"] == 6
    assert report["moved"] > 1e-3
    assert report["ema"] < 1e-5
    assert report["swa"] < 1e-5
    assert report["bn"] < 1e-5
