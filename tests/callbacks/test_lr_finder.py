"""LR finder: suggestions on synthetic curves, the sweep, divergence stop, state restored."""

import kerastricks  # noqa: F401  (selects tf-keras before TensorFlow is imported)

# isort: split
import numpy as np
import pytest
import tensorflow as tf

from kerastricks.callbacks import LRFinder, find_lr, get_suggestion, suggest_lrs
from kerastricks.callbacks.lr_suggestions import minimum, slide, steep, valley

LRS = np.logspace(-7, 1, 100)


def test_minimum_is_a_tenth_of_the_lowest_loss_lr():
    losses = (np.log10(LRS) + 2.0) ** 2
    best = LRS[np.argmin(losses)]
    assert best == pytest.approx(1e-2, rel=0.1)
    assert minimum(LRS, losses) == pytest.approx(best / 10)


def test_steep_is_where_the_loss_falls_fastest():
    losses = 1.0 - np.tanh(np.log10(LRS) + 3.0)  # steepest at log10(lr) = -3
    lr = steep(LRS, losses)
    assert abs(np.log10(lr) + 3.0) <= 8 / 99  # within one grid step of 1e-3


def test_valley_is_midway_down_the_longest_decreasing_run():
    losses = np.concatenate(
        [1.0 + 0.01 * np.arange(10), np.linspace(2.0, 0.5, 51), 0.5 + 0.1 * np.arange(1, 40)]
    )
    # Longest decreasing run: indices 10..60 (51 points), so start = 60 - 51 = 9, a third of
    # the span is 17 and the suggestion sits at 9 + 17 + 8 = 34.
    assert valley(LRS, losses) == LRS[34]


def test_slide_stops_where_the_slope_settles():
    steps = np.arange(100)
    losses = np.where(steps < 70, 1.0 - 0.001 * steps, 0.93 + 0.01 * (steps - 70) ** 2)
    index = int(np.argmin(np.abs(LRS - slide(LRS, losses))))
    assert 54 <= index <= 56  # the window's left edge once both ends are on the straight part


def test_suggest_lrs_trims_and_names():
    losses = (np.log10(LRS) + 2.0) ** 2
    losses[80] = np.nan
    result = suggest_lrs(LRS, losses, ["minimum", "steep"], num_it=100)
    assert result["minimum"] == pytest.approx(minimum(LRS[10:80], losses[10:80]))
    assert np.isnan(suggest_lrs(LRS[:12], losses[:12], ["valley"], num_it=100)["valley"])
    with pytest.raises(ValueError, match="Did you mean 'valley'"):
        get_suggestion("vally")


def tiny_model(optimizer, batch_norm=False):
    layers = [tf.keras.layers.Dense(8, activation="relu")]
    if batch_norm:
        layers.append(tf.keras.layers.BatchNormalization())
    layers.append(tf.keras.layers.Dense(1))
    model = tf.keras.Sequential([tf.keras.Input((4,)), *layers])
    model.compile(optimizer=optimizer, loss="mse")
    return model


def regression_data(n=64, batch=8, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype("float32")
    y = (x @ np.array([1.0, -2.0, 0.5, 3.0], "float32"))[:, None]
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch, drop_remainder=True)


class LRRecorder(tf.keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.lrs = []

    def on_train_batch_begin(self, batch, logs=None):
        self.lrs.append(float(self.model.optimizer.learning_rate.numpy()))


def test_sweep_sets_exponential_lrs_and_smooths_the_batch_loss():
    tf.keras.utils.set_random_seed(0)
    model = tf.keras.Sequential(
        [tf.keras.Input((1,)), tf.keras.layers.Dense(1, kernel_initializer="zeros")]
    )
    model.compile(optimizer=tf.keras.optimizers.SGD(0.5), loss="mse")
    # Batch k has targets k and the model predicts ~0, so the batch loss is k**2.
    y = np.repeat(np.arange(1, 7, dtype="float32"), 4)[:, None]
    data = tf.data.Dataset.from_tensor_slices((np.zeros_like(y), y)).batch(4)
    finder = LRFinder(start_lr=1e-12, end_lr=1e-10, num_it=6, smooth_beta=0.5, stop_div=False)
    recorder = LRRecorder()
    model.fit(data, epochs=1, callbacks=[finder, recorder], verbose=0)
    expected_lrs = [1e-12 * 100 ** (i / 6) for i in range(6)]
    np.testing.assert_allclose(finder.lrs, expected_lrs, rtol=1e-12)
    np.testing.assert_allclose(recorder.lrs, expected_lrs, rtol=1e-6)
    raw = np.arange(1, 7) ** 2.0
    ema = [0.5 * raw[0]]
    for loss in raw[1:]:
        ema.append(0.5 * ema[-1] + 0.5 * loss)
    debiased = [value / (1 - 0.5 ** (i + 1)) for i, value in enumerate(ema)]
    np.testing.assert_allclose(finder.losses, debiased, rtol=1e-5)
    assert float(model.optimizer.learning_rate.numpy()) == pytest.approx(0.5)


def test_sweep_stops_on_divergence_and_restores_everything():
    tf.keras.utils.set_random_seed(1)
    model = tiny_model(tf.keras.optimizers.Adam(1e-3), batch_norm=True)
    data = regression_data()
    model.fit(data, epochs=1, verbose=0)  # non-zero Adam slots and BN statistics
    weights = [v.numpy().copy() for v in model.weights]
    state = [v.numpy().copy() for v in model.optimizer.variables]
    assert int(model.optimizer.iterations.numpy()) == 8
    finder = find_lr(model, data, steps=200, start_lr=1e-5, end_lr=1e4, suggest=["valley", "steep"])
    assert 20 < len(finder.lrs) < 200  # stopped early, on divergence
    assert finder.losses[-1] > 4 * min(finder.losses) or not np.isfinite(finder.losses[-1])
    assert all(np.array_equal(v.numpy(), w) for v, w in zip(model.weights, weights, strict=True))
    assert all(
        np.array_equal(v.numpy(), s) for v, s in zip(model.optimizer.variables, state, strict=True)
    )
    assert float(model.optimizer.learning_rate.numpy()) == pytest.approx(1e-3)
    assert set(finder.suggestions) == {"valley", "steep"}
    assert 1e-5 < finder.suggestion < 1e4
    model.fit(data, epochs=1, verbose=0)
    assert int(model.optimizer.iterations.numpy()) == 16


def test_fresh_optimizer_is_left_fresh():
    model = tiny_model(tf.keras.optimizers.Adam(1e-3))
    find_lr(model, regression_data(), steps=10)
    values = [v.numpy() for v in model.optimizer.variables]
    assert len(values) == 1 + 2 * len(model.trainable_variables)  # iterations + m, v slots
    assert all(not np.any(v) for v in values)


def test_schedule_optimizer_is_refused_before_training():
    model = tiny_model(tf.keras.optimizers.Adam(tf.keras.optimizers.schedules.CosineDecay(1e-3, 9)))
    with pytest.raises(ValueError, match="LearningRateSchedule"):
        find_lr(model, regression_data(), steps=10)
    with pytest.raises(ValueError, match="start_lr < end_lr"):
        LRFinder(start_lr=1.0, end_lr=0.1)
