"""The optimizer inside the wrappers: the one that holds the hyperparameters and the slots."""

from __future__ import annotations

import tensorflow as tf

Optimizer = tf.keras.optimizers.Optimizer


def innermost_optimizer(optimizer: tf.keras.optimizers.Optimizer) -> tf.keras.optimizers.Optimizer:
    """Follows `inner_optimizer` through every wrapper (`LossScaleOptimizer`, `Lookahead`, ...)
    to the optimizer that holds the learning rate and applies the updates.

    Example:
    ```python
    wrapped = tf.keras.mixed_precision.LossScaleOptimizer(Lookahead(tf.keras.optimizers.Adam()))
    innermost_optimizer(wrapped).learning_rate  # the Adam's
    ```
    """
    return optimizer_chain(optimizer)[-1]


def optimizer_chain(optimizer: Optimizer) -> list[Optimizer]:
    """The optimizer and each one it wraps through `inner_optimizer`, outermost first: every
    level holds state of its own (a loss scale, Lookahead's slow weights, the moments)."""
    chain = [optimizer]
    while hasattr(chain[-1], "inner_optimizer"):
        chain.append(chain[-1].inner_optimizer)
    return chain
