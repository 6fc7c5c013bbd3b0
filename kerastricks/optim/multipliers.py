"""Per-group learning-rate multipliers on top of any tf_keras optimizer.

The multiplier scales each variable's whole step (the optimizer's update and its decoupled
weight decay), like a per-group learning rate in PyTorch: `v_new = v_old + m * (step)`.
Scaling gradients instead would do nothing for Adam-type optimizers, whose step is
invariant to the gradient's scale.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import tensorflow as tf

from kerastricks._mixins import with_mixin
from kerastricks.optim.inner import innermost_optimizer

_MULTIPLIER_ATTR = "_lr_multipliers"
_GROUP_INDEX_ATTR = "_lr_group_index"


# tf_keras optimizers whose step is exactly proportional to the learning rate, with state
# (moments, accumulators) that does not contain it: for them the multiplier scales the
# learning rate read during the variable's update, which costs nothing. SGD and RMSprop
# keep the learning rate in their momentum buffer, so only without momentum.
_LR_LINEAR = ("Adam", "AdamW", "Adamax", "Nadam", "Adagrad", "Adadelta", "Lion")
_LR_LINEAR_WITHOUT_MOMENTUM = ("SGD", "RMSprop")


class _LRMultiplierMixin:
    """Scales the step of grouped variables by their group's multiplier.

    Mixed in front of the optimizer's own class, so that `type(opt)` keeps its name,
    config and checkpoint layout. Grouped variables get their decoupled weight decay inside
    `_update_step`, so that the multiplier covers the decay and the update together. Two
    equivalent ways, picked per optimizer at wrap time: scale the learning rate that the
    update reads (free; for optimizers linear in it), or snapshot the variable and rescale
    the step it took (any optimizer).
    """

    def _lr_group_of(self, variable: tf.Variable) -> int | None:
        if getattr(variable, "_unique_id", None) is None:
            return None
        return getattr(self, _GROUP_INDEX_ATTR).get(self._var_key(variable))

    def _apply_weight_decay(self, variables):
        ungrouped = [v for v in variables if self._lr_group_of(v) is None]
        super()._apply_weight_decay(ungrouped)

    @property
    def learning_rate(self):
        """The learning rate; times the group's multiplier while a grouped variable updates."""
        lr = _base_learning_rate_property(self).fget(self)
        multiplier = getattr(self, "_active_lr_multiplier", None)
        return lr if multiplier is None else lr * tf.cast(multiplier, lr.dtype)

    @learning_rate.setter
    def learning_rate(self, learning_rate):
        _base_learning_rate_property(self).fset(self, learning_rate)

    def _update_step(self, gradient, variable):
        group = self._lr_group_of(variable)
        if group is None:
            return super()._update_step(gradient, variable)
        multiplier = getattr(self, _MULTIPLIER_ATTR)[group]
        if self._lr_scales_step:
            self._active_lr_multiplier = multiplier
            try:
                self._decay_grouped_variable(variable)
                return super()._update_step(gradient, variable)
            finally:
                self._active_lr_multiplier = None
        before = tf.identity(variable)
        self._decay_grouped_variable(variable)
        super()._update_step(gradient, variable)
        multiplier = tf.cast(multiplier, variable.dtype)
        variable.assign_add((multiplier - 1.0) * (variable - before))

    def _decay_grouped_variable(self, variable: tf.Variable) -> None:
        # Same formula as tf_keras's Optimizer._apply_weight_decay. Optimizers that decay
        # inside their own update step (RectifiedAdam, LAMB) set _decays_in_update_step.
        if self.weight_decay is None or getattr(self, "_decays_in_update_step", False):
            return
        if not self._use_weight_decay(variable):
            return
        lr = tf.cast(self.learning_rate, variable.dtype)
        decay = tf.cast(self.weight_decay, variable.dtype)
        variable.assign_sub(variable * decay * lr)


def with_lr_multipliers(
    optimizer: tf.keras.optimizers.Optimizer,
    var_groups: Sequence[Any],
    multipliers: Sequence[float],
) -> tf.keras.optimizers.Optimizer:
    """Makes `optimizer` scale each group's step by its own LR multiplier.

    The optimizer keeps its type, config and checkpoint layout; the multipliers live in a
    non-trainable `tf.Variable` tracked by the optimizer (saved in checkpoints) and can be
    changed between stages without retracing with `set_lr_multipliers`. Each variable's
    step, its update plus its decoupled weight decay, is multiplied: with SGD and `lr=1`,
    a group with multiplier `m` moves by `-m * gradient`; with Adam the step is the one of
    Adam with `lr * m`, like a per-group learning rate in PyTorch or fastai. Variables in
    no group keep multiplier 1.0. For optimizers whose step is proportional to the learning
    rate (Adam, AdamW, Nadam, Adamax, Adagrad, Adadelta, Lion, SGD and RMSprop without
    momentum, RectifiedAdam, LAMB) the multiplier scales the learning rate the update reads,
    at no cost; for any other optimizer the variable is snapshotted and its step rescaled.
    Works with any LR schedule, under `tf.distribute` strategies, XLA, and inside a
    `LossScaleOptimizer` or `Lookahead` (their inner optimizer is made multiplier-aware).

    Example:

    ```python
    groups = kerastricks.models.layer_groups(model)
    lrs = kerastricks.optim.spread_lrs(len(groups), {"slice": [1e-5, 1e-3]})
    optimizer = with_lr_multipliers(tf.keras.optimizers.AdamW(1e-3), groups, lrs)
    model.compile(optimizer=optimizer, loss="categorical_crossentropy")
    ```

    Args:
        optimizer: a tf_keras (new-style) optimizer, not yet built.
        var_groups: one entry per group: a list of variables or layers, a layer, or an
            object with `.layers` (as returned by `kerastricks.models.layer_groups`).
            A layer contributes all its weights, so that frozen groups are covered when
            they are unfrozen later.
        multipliers: one float per group.

    Returns:
        The same optimizer object, now multiplier-aware.
    """
    target = _new_style_inner(optimizer)
    if len(var_groups) != len(multipliers):
        raise ValueError(
            f"with_lr_multipliers got {len(var_groups)} variable groups but "
            f"{len(multipliers)} multipliers {list(multipliers)!r}; give one per group."
        )
    if getattr(target, "_built", False):
        raise ValueError(
            f"Optimizer {target.name!r} is already built; call with_lr_multipliers before "
            "the first training step (or on a fresh optimizer before restoring a checkpoint)."
        )
    index: dict[Any, int] = {}
    for group, entry in enumerate(var_groups):
        for variable in _collect_variables(entry):
            key = target._var_key(variable)
            if key in index and index[key] != group:
                raise ValueError(
                    f"Variable {variable.name!r} is in LR group {index[key]} and in group "
                    f"{group}; each variable may belong to one group only."
                )
            index[key] = group
    _install(target, index, multipliers)
    return optimizer


def with_lr_multipliers_by_name(
    optimizer: tf.keras.optimizers.Optimizer,
    variables: Any,
    patterns: Mapping[str, float],
) -> tf.keras.optimizers.Optimizer:
    """Gives variables whose name matches a regex their own LR multiplier.

    Each pattern is a group (in the mapping's order); a variable goes to the first pattern
    that `re.search`es its `variable.name`; variables that match none keep 1.0.

    Example:

    ```python
    optimizer = with_lr_multipliers_by_name(
        tf.keras.optimizers.Adam(1e-3), model, {"^conv1|^bn1": 0.01, "layer[12]": 0.1}
    )
    ```

    Args:
        optimizer: a tf_keras optimizer, not yet built.
        variables: a model, layer or list of variables whose names are matched.
        patterns: regex -> multiplier.

    Returns:
        The same optimizer object, now multiplier-aware.
    """
    compiled = []
    for pattern in patterns:
        try:
            compiled.append(re.compile(pattern))
        except re.error as error:
            raise ValueError(f"LR multiplier pattern {pattern!r} is not a regex: {error}") from None
    groups: list[list[tf.Variable]] = [[] for _ in compiled]
    for variable in _collect_variables(variables):
        for group, regex in enumerate(compiled):
            if regex.search(variable.name):
                groups[group].append(variable)
                break
    empty = [pattern for pattern, group in zip(patterns, groups, strict=True) if not group]
    if empty:
        raise ValueError(f"LR multiplier patterns {empty!r} match no variable name.")
    return with_lr_multipliers(optimizer, groups, list(patterns.values()))


def set_lr_multipliers(optimizer: tf.keras.optimizers.Optimizer, multipliers: Sequence[float]):
    """Sets the per-group multipliers of a multiplier-aware optimizer (no retracing).

    Args:
        optimizer: an optimizer returned by `with_lr_multipliers`.
        multipliers: one float per group, in the order the groups were given.
    """
    variable = _multiplier_variable(optimizer)
    if len(multipliers) != variable.shape[0]:
        raise ValueError(
            f"set_lr_multipliers got {len(multipliers)} multipliers {list(multipliers)!r} for "
            f"an optimizer with {variable.shape[0]} LR groups."
        )
    variable.assign(tf.constant(_checked(multipliers), tf.float32))


def get_lr_multipliers(optimizer: tf.keras.optimizers.Optimizer) -> list[float]:
    """Returns the current per-group multipliers of a multiplier-aware optimizer."""
    return [float(value) for value in _multiplier_variable(optimizer).numpy()]


def _install(target, index: dict[Any, int], multipliers: Sequence[float]) -> None:
    values = _checked(multipliers)
    if not isinstance(target, _LRMultiplierMixin):
        target.__class__ = _multiplier_class(type(target))
    strategy = target._distribution_strategy
    # Under a strategy the vector must be a distributed variable, readable on each replica.
    scope = strategy.scope() if not tf.distribute.has_strategy() else contextlib.nullcontext()
    with scope:
        variable = tf.Variable(
            values,
            dtype=tf.float32,
            trainable=False,
            name="lr_multipliers",
            aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
        )
    setattr(target, _GROUP_INDEX_ATTR, target._no_dependency(index))
    target._lr_scales_step = _update_is_linear_in_lr(target)
    # Attribute assignment makes the variable a checkpoint dependency of the optimizer.
    setattr(target, _MULTIPLIER_ATTR, variable)
    if hasattr(target, "_coalesced_children"):
        # tf_keras caches the optimizer's checkpoint children on first save; refresh it.
        del target._coalesced_children


def _multiplier_class(base: type) -> type:
    cls = with_mixin(_LRMultiplierMixin, base)
    _register_like(cls, base)
    return cls


def _register_like(cls: type, base: type) -> None:
    """Makes `cls` serialise under `base`'s registered name (e.g. kerastricks>RectifiedAdam)."""
    registered = tf.keras.utils.get_registered_name(base)
    if ">" not in registered:
        return
    package, name = registered.split(">", 1)
    tf.keras.utils.register_keras_serializable(package, name)(cls)
    # Loading must build the optimizer's own class: multipliers are re-applied by the caller.
    tf.keras.utils.get_custom_objects()[registered] = base


def _base_learning_rate_property(optimizer) -> property:
    mro = type(optimizer).__mro__
    for klass in mro[mro.index(_LRMultiplierMixin) + 1 :]:
        if "learning_rate" in vars(klass):
            return vars(klass)["learning_rate"]
    raise AttributeError(f"{type(optimizer).__name__} has no learning_rate property")


def _update_is_linear_in_lr(optimizer) -> bool:
    if getattr(optimizer, "_update_is_linear_in_lr", False):
        return True
    # The optimizer's own class (after the mixin): a user subclass may change update_step.
    base = type(optimizer).__mro__[2]
    if not base.__module__.startswith("tf_keras."):
        return False
    if base.__name__ in _LR_LINEAR:
        return True
    return base.__name__ in _LR_LINEAR_WITHOUT_MOMENTUM and not getattr(optimizer, "momentum", 0)


def _new_style_inner(optimizer):
    """The innermost optimizer (`innermost_optimizer`), which must be a new-style one."""
    current = innermost_optimizer(optimizer)
    if not isinstance(current, tf.keras.optimizers.Optimizer):
        raise TypeError(
            f"LR multipliers need a tf.keras (new-style) optimizer; got {type(current).__name__}."
            " Use tf.keras.optimizers.* rather than tf.keras.optimizers.legacy.*."
        )
    return current


def _multiplier_variable(optimizer) -> tf.Variable:
    target = _new_style_inner(optimizer)
    variable = getattr(target, _MULTIPLIER_ATTR, None)
    if variable is None:
        raise ValueError(
            f"Optimizer {target.name!r} has no LR multipliers; wrap it first with "
            "with_lr_multipliers(optimizer, var_groups, multipliers)."
        )
    return variable


def _collect_variables(entry: Any) -> list[tf.Variable]:
    if isinstance(entry, tf.Variable) or hasattr(entry, "_distributed_container"):
        return [entry]
    if isinstance(entry, tf.keras.layers.Layer):
        return list(entry.weights)
    if hasattr(entry, "layers") and not isinstance(entry, (str, bytes)):
        return _flatten(entry.layers)
    if isinstance(entry, tf.Module):
        return list(entry.variables)
    if isinstance(entry, Iterable) and not isinstance(entry, (str, bytes)):
        return _flatten(entry)
    raise TypeError(
        f"Cannot take variables from {type(entry).__name__} {entry!r}: give variables, "
        "layers, or an object with `.layers`."
    )


def _flatten(entries: Iterable[Any]) -> list[tf.Variable]:
    variables: list[tf.Variable] = []
    for entry in entries:
        variables.extend(_collect_variables(entry))
    return variables


def _checked(multipliers: Sequence[float]) -> list[float]:
    values = [float(value) for value in multipliers]
    if any(not (value >= 0.0) or value == float("inf") for value in values):
        raise ValueError(f"LR multipliers must be finite and >= 0. Received {list(multipliers)!r}")
    return values
