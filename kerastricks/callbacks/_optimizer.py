"""Optimizer plumbing shared by the callbacks: building slots up front, settable LRs."""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from kerastricks.optim.inner import innermost_optimizer


def is_built(optimizer: tf.keras.optimizers.Optimizer) -> bool:
    """Whether a new-style tf_keras optimizer has created its slot variables."""
    return bool(getattr(innermost_optimizer(optimizer), "_built", False))


def build_optimizer(
    optimizer: tf.keras.optimizers.Optimizer, variables: Sequence[tf.Variable]
) -> None:
    """Creates the optimizer's slots for `variables` now, if it has not created any yet.

    tf_keras (new-style) optimizers create slots once, in `build`, for the variables of the
    first `apply_gradients`, and raise a KeyError for any variable they meet later; legacy
    optimizers create them lazily, which `_create_all_weights` forces.
    """
    inner = innermost_optimizer(optimizer)
    if isinstance(inner, tf.keras.optimizers.legacy.Optimizer):
        inner._create_all_weights(list(variables))
    elif not is_built(optimizer):
        optimizer.build(list(variables))


def missing_slots(
    optimizer: tf.keras.optimizers.Optimizer, variables: Sequence[tf.Variable]
) -> list[str]:
    """Names of `variables` that a built new-style optimizer has no slots for."""
    inner = innermost_optimizer(optimizer)
    index = getattr(inner, "_index_dict", None)
    if not is_built(optimizer) or index is None:
        return []
    return [v.name for v in variables if inner._var_key(v) not in index]


def learning_rate_is_settable(optimizer: tf.keras.optimizers.Optimizer) -> bool:
    """False when the optimizer's LR is a `LearningRateSchedule` (tf_keras cannot set it)."""
    inner = innermost_optimizer(optimizer)
    schedule_type = tf.keras.optimizers.schedules.LearningRateSchedule
    if isinstance(inner, tf.keras.optimizers.legacy.Optimizer):
        return not isinstance(inner._get_hyper("learning_rate"), schedule_type)
    return not isinstance(getattr(inner, "_learning_rate", None), schedule_type)
