"""Optimizer factory (timm's `create_optimizer_v2` style) and weight-decay exclusion."""

from __future__ import annotations

import difflib
import inspect
from dataclasses import dataclass
from typing import Any

import tensorflow as tf

from kerastricks.optim.lamb import LAMB
from kerastricks.optim.lookahead import Lookahead
from kerastricks.optim.multipliers import _collect_variables, _new_style_inner
from kerastricks.optim.radam import RectifiedAdam

_BASE_KWARGS = (
    "clipnorm",
    "clipvalue",
    "global_clipnorm",
    "use_ema",
    "ema_momentum",
    "ema_overwrite_frequency",
    "jit_compile",
    "name",
)
_LOOKAHEAD_KWARGS = ("sync_period", "slow_step_size")


@dataclass(frozen=True)
class _Entry:
    cls: type
    defaults: dict[str, Any]
    lookahead: bool = False

    def accepted(self) -> list[str]:
        own = [
            name
            for name, parameter in inspect.signature(self.cls.__init__).parameters.items()
            if name not in ("self", "learning_rate", "weight_decay")
            and parameter.kind is not inspect.Parameter.VAR_KEYWORD
        ]
        extra = _LOOKAHEAD_KWARGS if self.lookahead else ()
        return sorted(set(own) | set(_BASE_KWARGS) | set(extra))


# timm's "sgd" is Nesterov momentum 0.9; the others keep Keras' (or tfa's) defaults.
_REGISTRY: dict[str, _Entry] = {
    "adamw": _Entry(tf.keras.optimizers.AdamW, {}),
    "adam": _Entry(tf.keras.optimizers.Adam, {}),
    "sgd": _Entry(tf.keras.optimizers.SGD, {"momentum": 0.9, "nesterov": True}),
    "rmsprop": _Entry(tf.keras.optimizers.RMSprop, {}),
    "lamb": _Entry(LAMB, {}),
    "radam": _Entry(RectifiedAdam, {}),
    "lookahead_adamw": _Entry(tf.keras.optimizers.AdamW, {}, lookahead=True),
    "ranger": _Entry(RectifiedAdam, {}, lookahead=True),
}


def list_optimizers() -> list[str]:
    """Returns the names `create_optimizer` accepts, sorted."""
    return sorted(_REGISTRY)


def create_optimizer(
    name: str = "adamw",
    learning_rate: float | tf.keras.optimizers.schedules.LearningRateSchedule = 1e-3,
    weight_decay: float = 0.05,
    model: tf.keras.Model | None = None,
    **kwargs: Any,
) -> tf.keras.optimizers.Optimizer:
    """Creates an optimizer by name, like timm's `create_optimizer_v2`.

    Weight decay is decoupled (tf_keras's and tfa's rule: scaled by the learning rate) for
    every optimizer; `weight_decay=0` turns it off. When `model` is given, its biases and
    normalisation weights (every variable with ndim <= 1) get no decay, as timm's
    `param_groups_weight_decay`. `"lookahead_adamw"` and `"ranger"` (Lookahead over
    RectifiedAdam) take `sync_period` and `slow_step_size` too.

    Example:

    ```python
    optimizer = create_optimizer("adamw", learning_rate=1e-3, weight_decay=0.05, model=model)
    optimizer = create_optimizer("ranger", learning_rate=schedule, sync_period=6)
    ```

    Args:
        name: one of `list_optimizers()`.
        learning_rate: float or `tf.keras.optimizers.schedules.LearningRateSchedule`.
        weight_decay: decoupled weight decay factor, >= 0.
        model: optional model (or layer, or list of variables) whose 1-D variables are
            excluded from weight decay.
        **kwargs: arguments of the optimizer's class (e.g. `beta_2`, `momentum`,
            `clipnorm`); an unknown one is an error that lists the accepted ones.

    Returns:
        A new, unbuilt tf_keras optimizer.
    """
    entry = _REGISTRY.get(str(name).lower())
    if entry is None:
        close = difflib.get_close_matches(str(name).lower(), list(_REGISTRY), n=3, cutoff=0.4)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(
            f"Unknown optimizer {name!r}.{hint} Available: {', '.join(list_optimizers())}."
        )
    accepted = entry.accepted()
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise TypeError(
            f"Optimizer {name!r} does not take {', '.join(unknown)}. "
            f"Accepted arguments: learning_rate, weight_decay, {', '.join(accepted)}."
        )
    if weight_decay is None or weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0. Received weight_decay={weight_decay}")
    outer = {key: kwargs.pop(key) for key in _LOOKAHEAD_KWARGS if key in kwargs}
    arguments = {**entry.defaults, **kwargs}
    decay = _decay_argument(entry.cls, weight_decay)
    optimizer = entry.cls(learning_rate=learning_rate, weight_decay=decay, **arguments)
    if entry.lookahead:
        optimizer = Lookahead(optimizer, **outer)
    if model is not None:
        exclude_bias_and_norm_from_decay(optimizer, model)
    return optimizer


def _decay_argument(cls: type, weight_decay: float) -> float | None:
    # None keeps tf_keras's decay ops out of the graph; AdamW and our optimizers need a number.
    if weight_decay == 0 and cls not in (tf.keras.optimizers.AdamW, LAMB, RectifiedAdam):
        return None
    return float(weight_decay)


def exclude_bias_and_norm_from_decay(
    optimizer: tf.keras.optimizers.Optimizer, variables: Any
) -> list[tf.Variable]:
    """Keeps weight decay off biases and normalisation weights (every variable with ndim <= 1).

    timm's `param_groups_weight_decay` rule, through tf_keras's own
    `optimizer.exclude_from_weight_decay(var_list=...)`; exclusions set before are kept.
    Works through `LossScaleOptimizer` and `Lookahead` (the optimizer that decays is the
    inner one).

    Example:

    ```python
    optimizer = tf.keras.optimizers.AdamW(1e-3, weight_decay=0.05)
    exclude_bias_and_norm_from_decay(optimizer, model)
    ```

    Args:
        optimizer: a tf_keras optimizer, not yet built.
        variables: a model, layer, or list of variables.

    Returns:
        The variables excluded by this call.
    """
    target = _new_style_inner(optimizer)
    if getattr(target, "_built", False):
        raise ValueError(
            f"Optimizer {target.name!r} is already built; weight-decay exclusion must be set "
            "before the first training step."
        )
    excluded = [v for v in _collect_variables(variables) if v.trainable and v.shape.rank <= 1]
    previous = list(getattr(target, "_exclude_from_weight_decay", []))
    names = list(getattr(target, "_exclude_from_weight_decay_names", []))
    target.exclude_from_weight_decay(var_list=excluded, var_names=names)
    keys = target._exclude_from_weight_decay
    keys.extend(key for key in previous if key not in keys)
    return excluded
