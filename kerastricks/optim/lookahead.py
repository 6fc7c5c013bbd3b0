"""Lookahead: k fast steps forward with any optimizer, then one step back to slow weights."""

from __future__ import annotations

import tensorflow as tf


@tf.keras.utils.register_keras_serializable(package="kerastricks")
class Lookahead(tf.keras.optimizers.Optimizer):
    """Wraps an optimizer with the Lookahead mechanism.

    Zhang et al., "Lookahead Optimizer: k steps forward, 1 step back" (2019). The inner
    optimizer updates the ("fast") model weights; every `sync_period` steps the slow
    weights move `slow_step_size` of the way towards the fast ones and the fast weights are
    reset to them. Arguments and update rule follow `tfa.optimizers.Lookahead`: the slow
    weights start as the weights before the first step, and synchronisation happens after
    steps `sync_period`, `2 * sync_period`, ... Learning rate, gradient clipping and weight
    decay are the inner optimizer's; the iteration counter is shared with it, so its LR
    schedule and bias corrections see the true step.

    Example:

    ```python
    optimizer = kerastricks.optim.Lookahead(tf.keras.optimizers.AdamW(1e-3), sync_period=6)
    model.compile(optimizer=optimizer, loss="categorical_crossentropy")
    ```

    Args:
        optimizer: the inner tf_keras (new-style) optimizer, or its name.
        sync_period: number of fast steps between synchronisations (k), >= 1.
        slow_step_size: fraction of the way the slow weights move towards the fast ones
            (alpha), in (0, 1].
        name: name of the optimizer.
        **kwargs: base optimizer arguments (`jit_compile`...).
    """

    def __init__(
        self,
        optimizer: tf.keras.optimizers.Optimizer | str,
        sync_period: int = 6,
        slow_step_size: float = 0.5,
        name: str = "Lookahead",
        **kwargs,
    ):
        if isinstance(optimizer, (str, dict)):
            optimizer = tf.keras.optimizers.get(optimizer)
        if not isinstance(optimizer, tf.keras.optimizers.Optimizer):
            raise TypeError(
                "Lookahead wraps a tf.keras (new-style) optimizer; got "
                f"{type(optimizer).__name__}. Use tf.keras.optimizers.*, not .legacy.*."
            )
        if isinstance(sync_period, bool) or not isinstance(sync_period, int) or sync_period < 1:
            raise ValueError(f"Lookahead needs an integer sync_period >= 1. Received {sync_period}")
        if not 0.0 < slow_step_size <= 1.0:
            raise ValueError(f"Lookahead needs 0 < slow_step_size <= 1. Received {slow_step_size}")
        kwargs.pop("weight_decay", None)
        kwargs.setdefault("jit_compile", optimizer.jit_compile)
        # Set before the base __init__, which creates the iteration counter (see below).
        self._optimizer = optimizer
        super().__init__(name=name, weight_decay=None, **kwargs)
        self.sync_period = sync_period
        self.slow_step_size = slow_step_size

    def _create_iteration_variable(self):
        # One shared counter: the inner optimizer's schedule and bias corrections read it,
        # and apply_gradients increments it once per step.
        self._iterations = self._optimizer.iterations
        self._variables.append(self._iterations)

    @property
    def inner_optimizer(self) -> tf.keras.optimizers.Optimizer:
        """The wrapped optimizer."""
        return self._optimizer

    @property
    def learning_rate(self):
        """The inner optimizer's learning rate."""
        return self._optimizer.learning_rate

    @learning_rate.setter
    def learning_rate(self, learning_rate):
        self._optimizer.learning_rate = learning_rate

    def _compute_current_learning_rate(self):
        self._optimizer._compute_current_learning_rate()

    def _clip_gradients(self, grads):
        return self._optimizer._clip_gradients(grads)

    def _apply_weight_decay(self, variables):
        self._optimizer._apply_weight_decay(variables)

    def build(self, var_list):
        """Builds the inner optimizer and one slow copy per variable."""
        super().build(var_list)
        if getattr(self, "_built", False):
            return
        self._built = True
        self._optimizer.build(var_list)
        self._slow_weights = [
            self.add_variable_from_reference(v, "slow", initial_value=v) for v in var_list
        ]

    def update_step(self, gradient, variable):
        """One inner step, then a synchronisation every `sync_period` steps."""
        slow = self._slow_weights[self._index_dict[self._var_key(variable)]]
        # tfa's rule: the slow weights are the weights before the first step, whenever
        # the optimizer was built.
        tf.cond(
            tf.equal(self.iterations, 0),
            lambda: _assign(slow, variable),
            tf.no_op,
        )
        self._optimizer._update_step(gradient, variable)
        local_step = self.iterations + 1
        tf.cond(
            tf.equal(local_step % self.sync_period, 0),
            lambda: self._synchronise(slow, variable),
            tf.no_op,
        )

    def _synchronise(self, slow, variable):
        alpha = tf.cast(self.slow_step_size, variable.dtype)
        slow.assign_add(alpha * (variable - slow))
        return _assign(variable, slow)

    def get_config(self) -> dict:
        """Returns the constructor arguments, the inner optimizer serialised."""
        config = super().get_config()
        config.pop("weight_decay", None)
        config.update(
            {
                "optimizer": tf.keras.optimizers.serialize(self._optimizer),
                "sync_period": self.sync_period,
                "slow_step_size": self.slow_step_size,
            }
        )
        return config

    @classmethod
    def from_config(cls, config: dict, custom_objects: dict | None = None) -> Lookahead:
        """Re-creates a Lookahead and its inner optimizer from `get_config()`."""
        config = dict(config)
        inner = tf.keras.optimizers.deserialize(
            config.pop("optimizer"), custom_objects=custom_objects, use_legacy_optimizer=False
        )
        return cls(inner, **config)


def _assign(target: tf.Variable, value) -> tf.Operation:
    # tf.cond branches must return the same structure: an op on both sides.
    with tf.control_dependencies([target.assign(value)]):
        return tf.no_op()
