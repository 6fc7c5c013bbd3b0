"""`MomentumScheduler`: sets the optimizer's momentum / beta_1 from a schedule, per batch."""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from kerastricks._mixins import with_mixin
from kerastricks.optim.inner import innermost_optimizer


class _FloatConfigMixin:
    """Reports variable hyperparameters as floats in `get_config`, so a model can be saved
    whole (`.keras`, `.h5`) while the momentum is a variable."""

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        return {k: float(v.numpy()) if isinstance(v, tf.Variable) else v for k, v in config.items()}


def _float_config_class(base: type) -> type:
    return with_mixin(_FloatConfigMixin, base)


class MomentumScheduler(tf.keras.callbacks.Callback):
    """Sets the optimizer's `beta_1` (Adam family) or `momentum` (SGD, RMSprop) every batch.

    The companion of `OneCycle.momentum_schedule()` (PyTorch `cycle_momentum`, fastai's
    momentums 0.95 -> 0.85 -> 0.95). tf_keras optimizers read these hyperparameters as python
    floats when the train step is traced, so setting a float each batch would do nothing;
    this callback replaces the float by a `tf.Variable` at the start of training (retracing
    once), assigns it each batch (no retracing), and puts the last value back as a float at
    the end. Adam's bias correction then uses the current beta_1, as PyTorch's does.

    Example:
    ```python
    schedule = OneCycle(1e-3, total_steps)
    model.compile(optimizer=tf.keras.optimizers.AdamW(schedule), loss="mse")
    model.fit(ds, epochs=epochs, callbacks=[MomentumScheduler(schedule.momentum_schedule())])
    ```

    Args:
        schedule: a `LearningRateSchedule` (or any function of the step) giving the momentum.
        attribute: the hyperparameter to set; by default `beta_1` if the optimizer has one,
            else `momentum`.
    """

    def __init__(self, schedule: Any, attribute: str | None = None) -> None:
        super().__init__()
        self.schedule = schedule
        self.attribute = attribute
        self._variable: tf.Variable | None = None

    def _attribute_of(self, optimizer: tf.keras.optimizers.Optimizer) -> str:
        names = [self.attribute] if self.attribute else ["beta_1", "momentum"]
        for name in names:
            if hasattr(optimizer, name):
                return name
        raise ValueError(
            f"MomentumScheduler: optimizer {type(optimizer).__name__} has no {' or '.join(names)} "
            "hyperparameter to schedule; use Adam/AdamW/SGD/RMSprop or pass attribute=."
        )

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        optimizer = innermost_optimizer(self.model.optimizer)
        self._name = self._attribute_of(optimizer)
        current = getattr(optimizer, self._name)
        if isinstance(optimizer, tf.keras.optimizers.legacy.Optimizer):
            self._variable = None  # legacy hyperparameters are variables already
            return
        if isinstance(current, tf.Variable):
            self._variable = current
            return
        self._variable = tf.Variable(float(current), trainable=False, dtype=tf.float32)
        # Not a checkpoint dependency: the schedule recomputes it from the step on resume.
        setattr(optimizer, self._name, optimizer._no_dependency(self._variable))
        if not isinstance(optimizer, _FloatConfigMixin):
            optimizer.__class__ = _float_config_class(type(optimizer))
        # The cached train step captured the float; the next call traces with the variable.
        self.model.make_train_function(force=True)

    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        optimizer = innermost_optimizer(self.model.optimizer)
        value = float(self.schedule(optimizer.iterations))
        if self._variable is None:
            setattr(optimizer, self._name, value)
        else:
            self._variable.assign(value)

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        if self._variable is not None:
            optimizer = innermost_optimizer(self.model.optimizer)
            setattr(optimizer, self._name, float(self._variable.numpy()))
