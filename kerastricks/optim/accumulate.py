"""Exact gradient accumulation: one optimizer update from k micro-batches of one large batch.

tf_keras 2.21's optimizers have no `gradient_accumulation_steps` (Keras 3's do), and an
optimizer wrapper that applies every k-th call would have to put `apply_gradients` (a
cross-replica synchronisation point) inside a `tf.cond`, which MirroredStrategy rejects.
So the model's train step does it instead: it receives the whole batch of `k x B` samples,
runs forward and backward on each of the k micro-batches of B in turn (a `tf.while_loop`,
so that only one micro-batch's activations are alive), averages the k gradients and applies
them once. With a mean-reduced loss the update is exactly the one of the large batch, for
layers that do not depend on the batch (BatchNorm normalises each micro-batch on its own, as
in PyTorch). `optimizer.iterations` counts updates, so LR schedules step per update, and no
accumulator outlives a step: a run resumed from any checkpoint continues exactly.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from kerastricks._mixins import with_mixin

_STEPS_ATTR = "_accumulate_steps"


class _GradientAccumulationMixin:
    """Replaces `Model.train_step` by k micro-batch steps and one update."""

    def train_step(self, data: Any) -> dict[str, tf.Tensor]:
        steps = getattr(self, _STEPS_ATTR)
        if steps == 1:
            return super().train_step(data)
        micro = tf.nest.map_structure(
            lambda t: _split(t, steps), tf.keras.utils.unpack_x_y_sample_weight(data)
        )
        variables = self.trainable_variables
        # The first micro-batch runs outside the loop: its gradients seed the sums and show
        # which variables get none (Keras leaves those alone), which the loop's fixed
        # structure must know before it is built.
        first = self._micro_batch_gradients(micro, 0, variables)
        present = [i for i, g in enumerate(first) if g is not None]

        def body(i, sums):
            grads = self._micro_batch_gradients(micro, i, variables)
            grads = [tf.convert_to_tensor(grads[j]) for j in present]
            return i + 1, [s + g for s, g in zip(sums, grads, strict=True)]

        _, sums = tf.while_loop(
            lambda i, _: i < steps,
            body,
            (tf.constant(1), [tf.convert_to_tensor(first[j]) for j in present]),
            # One micro-batch at a time: the point is to bound activation memory.
            parallel_iterations=1,
        )
        grads = [s / tf.cast(steps, s.dtype) for s in sums]
        self.optimizer.apply_gradients(zip(grads, [variables[j] for j in present], strict=True))
        return self.get_metrics_result()

    def _micro_batch_gradients(
        self, micro: tuple[Any, Any, Any], index: Any, variables: list[tf.Variable]
    ) -> list[Any]:
        x, y, sample_weight = tf.nest.map_structure(
            lambda t: None if t is None else t[index], micro
        )
        with tf.GradientTape() as tape:
            y_pred = self(x, training=True)
            loss = self.compute_loss(x, y, y_pred, sample_weight)
        self._validate_target_and_loss(y, loss)
        # The optimizer's compute_gradients scales and unscales the loss under mixed precision.
        grads_and_vars = self.optimizer.compute_gradients(loss, variables, tape=tape)
        # Loss and metrics are means weighted by the samples seen: over the k micro-batches
        # they end up the values of the whole batch. Not compute_metrics: reading results is
        # a cross-replica merge_call, which a loop body may not hold.
        self.compiled_metrics.update_state(y, y_pred, sample_weight)
        return [g for g, _ in grads_and_vars]


def _split(tensor: tf.Tensor | None, steps: int) -> tf.Tensor | None:
    """[k * B, ...] -> [k, B, ...]: micro-batch i holds samples i*B .. (i+1)*B - 1."""
    if tensor is None:
        return None
    batch = tensor.shape[0]
    if batch is not None and batch % steps:
        raise ValueError(
            f"Gradient accumulation over {steps} micro-batches needs a per-replica batch "
            f"divisible by {steps}; got a batch of {batch}. Batch the data by a multiple of "
            f"{steps} (per replica) with drop_remainder=True."
        )
    shape = tf.shape(tensor)
    return tf.reshape(tensor, tf.concat([[steps, shape[0] // steps], shape[1:]], axis=0))


def accumulate_gradients(model: tf.keras.Model, steps: int) -> tf.keras.Model:
    """Makes `model.fit` split each batch into `steps` micro-batches and update once.

    Feed batches `steps` times larger than what fits in memory for one forward/backward
    pass: each train step averages the gradients of its micro-batches and applies them in
    one optimizer update, exactly the update of the whole batch for a mean-reduced loss and
    batch-independent layers. Works under `tf.distribute` strategies (each replica splits
    its share; gradients are all-reduced once per update), with `jit_compile=True`, mixed
    precision (LossScaleOptimizer) and multiplier-aware optimizers. `optimizer.iterations`
    counts updates. The model keeps its class name, config and checkpoint layout.

    Example:

    ```python
    model = accumulate_gradients(model, steps=4)
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    model.fit(train_ds.batch(4 * 16, drop_remainder=True), epochs=10)  # updates of 64
    ```

    Args:
        model: a Functional or Sequential model, or a subclass that keeps Keras' own
            `train_step`. Call again with another `steps` to change it (1 turns it off).
        steps: micro-batches per update, >= 1.

    Returns:
        The same model object.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"accumulate_gradients needs an int steps >= 1. Received steps={steps!r}")
    base = type(model)
    if not isinstance(model, _GradientAccumulationMixin):
        if base.train_step is not tf.keras.Model.train_step:
            raise ValueError(
                f"{base.__name__} defines its own train_step; accumulate_gradients would "
                "replace it. Average the micro-batch gradients in that train_step instead."
            )
        model.__class__ = _accumulating_class(base)
    setattr(model, _STEPS_ATTR, steps)
    # A train function traced before holds the old step.
    model.train_function = None
    return model


def accumulation_steps(model: tf.keras.Model) -> int:
    """The micro-batches per update of `model` (1 when accumulation is off)."""
    return getattr(model, _STEPS_ATTR, 1)


def _accumulating_class(base: type) -> type:
    return with_mixin(_GradientAccumulationMixin, base)
