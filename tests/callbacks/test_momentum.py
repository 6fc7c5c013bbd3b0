"""MomentumScheduler: the scheduled momentum is what the compiled step uses, saving works."""

import kerastricks  # noqa: F401  (selects tf-keras before TensorFlow is imported)

# isort: split
import numpy as np
import tensorflow as tf

from kerastricks.callbacks import MomentumScheduler
from kerastricks.schedules import Constant, OneCycle


def fit_weights(optimizer, callbacks, tmp_path=None):
    tf.keras.utils.set_random_seed(0)
    model = tf.keras.Sequential([tf.keras.Input((3,)), tf.keras.layers.Dense(2)])
    model.compile(optimizer=optimizer, loss="mse")
    x = np.arange(48, dtype="float32").reshape(16, 3) / 48
    model.fit(x, x[:, :2] * 2, batch_size=4, epochs=2, verbose=0, callbacks=callbacks)
    return model, [w.copy() for w in model.get_weights()]


class BetaRecorder(tf.keras.callbacks.Callback):
    def on_train_batch_begin(self, batch, logs=None):
        self.values = getattr(self, "values", [])
        self.values.append(float(tf.convert_to_tensor(self.model.optimizer.beta_1)))


def test_scheduled_momentum_is_used_by_the_traced_step():
    # SGD built with momentum 0.9 but scheduled to 0 must train exactly like plain SGD.
    _, plain = fit_weights(tf.keras.optimizers.SGD(0.1), [])
    _, heavy = fit_weights(tf.keras.optimizers.SGD(0.1, momentum=0.9), [])
    model, scheduled = fit_weights(
        tf.keras.optimizers.SGD(0.1, momentum=0.9), [MomentumScheduler(Constant(0.0))]
    )
    assert not np.allclose(plain[0], heavy[0])
    for got, want in zip(scheduled, plain, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6)
    assert model.optimizer.momentum == 0.0  # a float again after training


def test_one_cycle_momentum_per_batch_and_model_saves(tmp_path):
    schedule = OneCycle(1e-2, 8).momentum_schedule()
    recorder = BetaRecorder()
    saver = tf.keras.callbacks.ModelCheckpoint(str(tmp_path / "m.keras"))
    model, _ = fit_weights(
        tf.keras.optimizers.Adam(1e-2), [MomentumScheduler(schedule), recorder, saver]
    )
    np.testing.assert_allclose(recorder.values, [float(schedule(s)) for s in range(8)], rtol=1e-6)
    assert abs(recorder.values[0] - 0.95) < 1e-6 and min(recorder.values) < 0.86
    restored = tf.keras.models.load_model(str(tmp_path / "m.keras"))
    assert restored.optimizer.beta_1 == np.float32(recorder.values[-1]).item()
