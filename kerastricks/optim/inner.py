"""The optimizer inside the wrappers: the one that holds the hyperparameters and the slots."""

from __future__ import annotations

import tensorflow as tf


def innermost_optimizer(optimizer: tf.keras.optimizers.Optimizer) -> tf.keras.optimizers.Optimizer:
    """Follows `inner_optimizer` through every wrapper (`LossScaleOptimizer`, `Lookahead`, ...)
    to the optimizer that holds the learning rate and applies the updates.

    Example:
    ```python
    wrapped = tf.keras.mixed_precision.LossScaleOptimizer(Lookahead(tf.keras.optimizers.Adam()))
    innermost_optimizer(wrapped).learning_rate  # the Adam's
    ```
    """
    current = optimizer
    while hasattr(current, "inner_optimizer"):
        current = current.inner_optimizer
    return current
