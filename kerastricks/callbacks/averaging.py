"""Weight averaging: an exponential moving average (EMA) and stochastic weight averaging (SWA),
validated and exported in place of the raw weights, with BatchNorm statistics recomputed.

The EMA itself is tf_keras's own: `Optimizer(use_ema=True, ema_momentum=m)` keeps one average
per trainable variable, updates it inside the train step right after every applied update
(`average = m * average + (1 - m) * variable`, under any strategy and XLA), and holds it in
the optimizer's `_variables`, so that it is saved in and restored from the optimizer's
checkpoint. `enable_ema` switches it on for an optimizer that already exists (the trainer's
is built by a factory); `ModelEMA` is the glue that swaps the averages in for validation and
export. SWA keeps its own running mean in a trackable `tf.Module` (`swa.state`).
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator
from typing import Any

import numpy as np
import tensorflow as tf

from kerastricks.optim.inner import innermost_optimizer

_BATCH_NORM = tf.keras.layers.BatchNormalization.__mro__[1]  # also SyncBatchNormalization
# One traced statistics step per model, so that SWA's per-epoch BN update does not retrace.
_STATS_FUNCTIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def enable_ema(optimizer: Any, momentum: float = 0.999) -> Any:
    """Turns on the optimizer's own EMA of the weights; call before the optimizer is built.

    Args:
        optimizer: a tf_keras (new-style) optimizer, or a wrapper of one (LossScaleOptimizer).
        momentum: the decay `m` of `average = m * average + (1 - m) * weights`, in [0, 1).

    Returns:
        The same optimizer.
    """
    inner = innermost_optimizer(optimizer)
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"EMA momentum must be in [0, 1). Received momentum={momentum!r}")
    if not isinstance(inner, tf.keras.optimizers.Optimizer):
        raise TypeError(
            f"EMA needs a tf.keras (new-style) optimizer; got {type(inner).__name__}. "
            "Use tf.keras.optimizers.* rather than tf.keras.optimizers.legacy.*."
        )
    has_averages = getattr(inner, "_model_variables_moving_average", None) is not None
    if getattr(inner, "_built", False) and not has_averages:
        raise ValueError(
            f"Optimizer {inner.name!r} is already built without EMA: call enable_ema before "
            "optimizer.build (or before the first training step)."
        )
    inner.use_ema = True
    inner.ema_momentum = float(momentum)
    # Periodic overwriting of the model's weights would make training itself use the average.
    inner.ema_overwrite_frequency = None
    return optimizer


def update_bn(model: tf.keras.Model, dataset: tf.data.Dataset, steps: int | None = None) -> int:
    """Recomputes BatchNorm moving statistics as the mean of the batch statistics of `dataset`.

    The equivalent of `torch.optim.swa_utils.update_bn`: each trainable BatchNorm layer's
    `moving_mean` / `moving_variance` become the equal-weight average, over the batches, of
    the statistics the layer computes in training mode. No other weight changes. Frozen
    BatchNorm layers run in inference mode in tf_keras and keep their statistics.

    The variance is the one tf_keras's BatchNorm feeds its moving variance, which is not
    always torch's. On 4-D inputs (conv nets; `layer.fused` is True) the fused kernel applies
    Bessel's correction, so `moving_variance` is the mean over batches of the unbiased batch
    variance, as with torch's `update_bn`. Unfused layers (2-D inputs: an MLP's BatchNorm;
    3-D: tokens) use the biased variance: `(n - 1) / n` times torch's for `n` values per
    feature and batch (7/8 for a 2-D BatchNorm with batches of 8).

    Example:

    ```python
    update_bn(model, train_ds, steps=100)
    model.evaluate(val_ds)
    ```

    Args:
        model: the model, under the strategy it was built in.
        dataset: batches of `x`, `(x, y)` or `(x, y, sample_weight)`; one pass, or `steps`.
        steps: how many batches to use (default: the whole dataset, which must be finite).

    Returns:
        The number of batches used.
    """
    layers = [m for m in model.submodules if isinstance(m, _BATCH_NORM) and m.trainable]
    if not layers:
        return 0
    if steps is not None and steps < 1:
        raise ValueError(f"update_bn needs steps >= 1 or None. Received steps={steps!r}")
    if steps is None and dataset.cardinality() == tf.data.INFINITE_CARDINALITY:
        raise ValueError("update_bn got an infinite dataset: pass steps= (e.g. 100 batches).")
    strategy = model.distribute_strategy
    momenta = [layer.momentum for layer in layers]
    try:
        # Momentum 0 makes the moving statistics equal to this batch's; the mean over batches
        # is then kept here, as torch does with momentum=None.
        for layer in layers:
            layer.momentum = 0.0
        batch_stats = _batch_stats_function(model, layers)
        sums = None
        count = 0
        data = dataset.take(steps) if steps is not None else dataset
        for batch in strategy.experimental_distribute_dataset(data):
            stats = batch_stats(batch)
            sums = stats if sums is None else [a + b for a, b in zip(sums, stats, strict=True)]
            count += 1
    finally:
        for layer, momentum in zip(layers, momenta, strict=True):
            layer.momentum = momentum
    if count == 0:
        raise ValueError("update_bn got an empty dataset: no batch to take statistics from.")
    for index, layer in enumerate(layers):
        layer.moving_mean.assign(sums[2 * index] / count)
        layer.moving_variance.assign(sums[2 * index + 1] / count)
    return count


def _batch_stats_function(model: tf.keras.Model, layers: list[Any]):
    key = tuple(id(layer) for layer in layers)
    cached = _STATS_FUNCTIONS.get(model)
    if cached is not None and cached[0] == key:
        return cached[1]
    strategy = model.distribute_strategy

    def forward(batch: Any) -> None:
        x, _, _ = tf.keras.utils.unpack_x_y_sample_weight(batch)
        model(x, training=True)

    @tf.function
    def batch_stats(batch: Any) -> list[tf.Tensor]:
        strategy.run(forward, args=(batch,))
        # Read in cross-replica context: the mean over replicas of each replica's statistics.
        return [
            v.read_value() for layer in layers for v in (layer.moving_mean, layer.moving_variance)
        ]

    _STATS_FUNCTIONS[model] = (key, batch_stats)
    return batch_stats


class _WeightAveraging(tf.keras.callbacks.Callback):
    """Swaps averaged weights into the model for validation, saving and export."""

    def __init__(self, bn_data: tf.data.Dataset | None = None, bn_steps: int | None = None):
        super().__init__()
        self.bn_data = bn_data
        self.bn_steps = bn_steps
        self._cache: tuple[Any, list[np.ndarray]] | None = None
        self._swapped = False

    def _averages(self) -> tuple[Any, dict[int, tf.Variable]] | None:
        """(a key that changes with the averages, {index in model.weights: average}), or None
        while nothing has been averaged yet."""
        raise NotImplementedError

    def _averaged_values(self) -> list[np.ndarray] | None:
        found = self._averages()
        if found is None:
            return None
        key, averages = found
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        raw = self.model.get_weights()
        values = [averages[i].numpy() if i in averages else w for i, w in enumerate(raw)]
        if self.bn_data is not None:
            self.model.set_weights(values)
            try:
                update_bn(self.model, self.bn_data, self.bn_steps)
                values = self.model.get_weights()
            finally:
                self.model.set_weights(raw)
        self._cache = (key, values)
        return values

    @contextlib.contextmanager
    def averaged_weights(self) -> Iterator[None]:
        """Within the block the model holds the averaged weights (and, with `bn_data`, the
        BatchNorm statistics recomputed for them); the raw ones come back on exit."""
        values = None if self._swapped else self._averaged_values()
        if values is None:
            yield
            return
        raw = self.model.get_weights()
        self.model.set_weights(values)
        self._swapped = True
        try:
            yield
        finally:
            self.model.set_weights(raw)
            self._swapped = False

    def finalize(self) -> bool:
        """Writes the averaged weights into the model for good (end of training); returns
        False when there is no average yet (the model keeps its weights)."""
        values = self._averaged_values()
        if values is not None:
            self.model.set_weights(values)
        return values is not None

    def on_test_begin(self, logs: dict | None = None) -> None:
        self._validation = self.averaged_weights()
        self._validation.__enter__()

    def on_test_end(self, logs: dict | None = None) -> None:
        validation = getattr(self, "_validation", None)
        self._validation = None
        if validation is not None:
            validation.__exit__(None, None, None)


class ModelEMA(_WeightAveraging):
    """Validates, checkpoints and exports the exponential moving average of the weights.

    timm's `ModelEmaV2` (`ema = decay * ema + (1 - decay) * w` after every optimizer step)
    on top of the optimizer's own EMA (`enable_ema`): the update runs inside the compiled
    train step and the averages live in the optimizer's checkpoint. This callback swaps them
    into the model while Keras validates (`val_*` metrics are the averaged model's), and
    `averaged_weights()` does the same around saving best/last weights. Trainable weights
    are averaged; BatchNorm statistics are the live ones unless `bn_data` is given, in which
    case they are recomputed for the averaged weights (`update_bn`). The model keeps training
    on its raw weights: `fit` does not end with the average written in (as tf_keras does with
    `use_ema`); call `finalize()` for that. There is no decay warm-up (tf_keras reads the
    momentum as a constant); for short runs use a lower momentum.

    Example:

    ```python
    model.compile(optimizer=tf.keras.optimizers.AdamW(1e-3), loss="categorical_crossentropy")
    ema = ModelEMA(momentum=0.999)
    model.fit(train_ds, validation_data=val_ds, epochs=10, callbacks=[ema])
    ema.finalize()  # the model now holds the averaged weights
    ```

    Args:
        momentum: the EMA decay, enabled on the optimizer at the start of training if it is
            not built yet; None when `enable_ema` was already called.
        bn_data: a dataset to recompute BatchNorm statistics on (e.g. the training data).
        bn_steps: how many of its batches to use.
    """

    def __init__(
        self,
        momentum: float | None = None,
        bn_data: tf.data.Dataset | None = None,
        bn_steps: int | None = None,
    ) -> None:
        super().__init__(bn_data, bn_steps)
        if momentum is not None and not 0.0 <= momentum < 1.0:
            raise ValueError(f"ModelEMA momentum must be in [0, 1). Received momentum={momentum!r}")
        self.momentum = momentum

    def on_train_begin(self, logs: dict | None = None) -> None:
        inner = innermost_optimizer(self.model.optimizer)
        if self.momentum is None:
            if not getattr(inner, "use_ema", False):
                raise ValueError(
                    f"ModelEMA: optimizer {inner.name!r} has no EMA; give ModelEMA(momentum=...) "
                    "or call kerastricks.callbacks.enable_ema(optimizer, momentum) before build."
                )
            return
        if getattr(inner, "use_ema", False) and inner.ema_momentum == self.momentum:
            return
        enable_ema(self.model.optimizer, self.momentum)
        # A train step traced by an earlier fit baked the old setting in.
        self.model.make_train_function(force=True)

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._keep_raw_weights_at_fit_end(False)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self._keep_raw_weights_at_fit_end(True)

    def on_train_end(self, logs: dict | None = None) -> None:
        self._keep_raw_weights_at_fit_end(False)

    def _keep_raw_weights_at_fit_end(self, keep: bool) -> None:
        # tf_keras's fit ends with optimizer.finalize_variable_values(), which overwrites the
        # weights with their average when use_ema is set. The next stage (and a resumed run,
        # whose checkpoint holds the raw weights) must train on the raw ones, so the flag is
        # off from each epoch's end to the next epoch's start. The train step read it when
        # traced, which happens only inside an epoch, so the averages keep updating.
        inner = innermost_optimizer(self.model.optimizer)
        if getattr(inner, "_model_variables_moving_average", None) is not None:
            inner.use_ema = not keep

    def _averages(self) -> tuple[Any, dict[int, tf.Variable]] | None:
        inner = innermost_optimizer(self.model.optimizer)
        if getattr(inner, "_model_variables_moving_average", None) is None:
            return None
        averages = {}
        for index, weight in enumerate(self.model.weights):
            slot = inner._index_dict.get(inner._var_key(weight))
            if slot is not None:
                averages[index] = inner._model_variables_moving_average[slot]
        return int(inner.iterations.numpy()), averages


class StochasticWeightAveraging(_WeightAveraging):
    """Equal-weight running average of the weights at the end of each epoch from a start epoch.

    Lightning's `StochasticWeightAveraging` (without its own LR schedule): from epoch
    `swa_epoch_start` on, the weights at the end of every epoch join a running mean, and
    `update_bn` recomputes the BatchNorm statistics of the averaged weights on `bn_data`.
    While Keras validates, the model holds the average (`val_*` metrics are the SWA
    model's); `averaged_weights()` does the same around saving. The count and the running
    mean live in `swa.state`, a `tf.Module` to add to the run's `tf.train.Checkpoint`.

    Example:

    ```python
    swa = StochasticWeightAveraging(swa_epoch_start=0.75, bn_data=train_ds, bn_steps=50)
    model.fit(train_ds, validation_data=val_ds, epochs=20, steps_per_epoch=100, callbacks=[swa])
    swa.finalize()
    ```

    Args:
        swa_epoch_start: the first averaged epoch, 1-based (`int`), or the fraction of
            `total_epochs` after which averaging starts (`float` in (0, 1)), as in Lightning.
        total_epochs: the run's number of epochs for a fractional start (default: `fit`'s
            `epochs`).
        bn_data: a dataset to recompute BatchNorm statistics on (e.g. the training data).
        bn_steps: how many of its batches to use.
    """

    def __init__(
        self,
        swa_epoch_start: int | float = 0.8,
        total_epochs: int | None = None,
        bn_data: tf.data.Dataset | None = None,
        bn_steps: int | None = None,
    ) -> None:
        super().__init__(bn_data, bn_steps)
        if isinstance(swa_epoch_start, bool) or not (
            (isinstance(swa_epoch_start, int) and swa_epoch_start >= 1)
            or (isinstance(swa_epoch_start, float) and 0.0 < swa_epoch_start < 1.0)
        ):
            raise ValueError(
                "swa_epoch_start must be an int >= 1 (1-based epoch) or a float in (0, 1) "
                f"(fraction of the run). Received swa_epoch_start={swa_epoch_start!r}"
            )
        self.swa_epoch_start = swa_epoch_start
        self.total_epochs = total_epochs
        self.state: tf.Module | None = None
        self._indices: list[int] = []
        self._pending: int | None = None

    def build(self, model: tf.keras.Model) -> tf.Module:
        """Creates the running mean for `model` (once) and returns `state` to checkpoint."""
        if self.state is None:
            floats = [(i, w) for i, w in enumerate(model.weights) if w.dtype.is_floating]
            self._indices = [i for i, _ in floats]
            with model.distribute_strategy.scope():
                self.state = _SWAState([w for _, w in floats])
        return self.state

    def set_model(self, model: tf.keras.Model) -> None:
        super().set_model(model)
        self.build(model)

    def start_epoch(self, total_epochs: int | None = None) -> int:
        """The 0-based index of the first averaged epoch."""
        if isinstance(self.swa_epoch_start, int):
            return self.swa_epoch_start - 1
        total = total_epochs or self.total_epochs
        if not total:
            raise ValueError(
                f"swa_epoch_start={self.swa_epoch_start} is a fraction of the run: give "
                "total_epochs= (or call fit with epochs=)."
            )
        return max(int(total * self.swa_epoch_start) - 1, 0)

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._start = self.start_epoch(self.total_epochs or self.params.get("epochs"))

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._pending = epoch

    def on_test_begin(self, logs: dict | None = None) -> None:
        # Fit validates before on_epoch_end: this epoch's weights must be in the average.
        self._average_pending()
        super().on_test_begin(logs)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self._average_pending()

    def _average_pending(self) -> None:
        epoch, self._pending = self._pending, None
        if epoch is not None and epoch >= self._start:
            self.state.add([self.model.weights[i] for i in self._indices])

    def _averages(self) -> tuple[Any, dict[int, tf.Variable]] | None:
        count = 0 if self.state is None else int(self.state.count.numpy())
        if count == 0:
            return None
        return count, dict(zip(self._indices, self.state.averages, strict=True))


class _SWAState(tf.Module):
    """The SWA count and running mean, as checkpointable variables."""

    def __init__(self, weights: list[tf.Variable]) -> None:
        super().__init__(name="swa")
        only_first = tf.VariableAggregation.ONLY_FIRST_REPLICA
        self.count = tf.Variable(0, dtype=tf.int64, trainable=False, aggregation=only_first)
        self.averages = [
            tf.Variable(tf.zeros(w.shape, w.dtype), trainable=False, aggregation=only_first)
            for w in weights
        ]

    def add(self, weights: list[tf.Variable]) -> None:
        n = tf.cast(self.count + 1, tf.float64)
        for average, weight in zip(self.averages, weights, strict=True):
            value = tf.cast(weight.read_value(), average.dtype)
            # The running mean of torch's AveragedModel: avg + (w - avg) / n.
            average.assign(average + (value - average) / tf.cast(n, average.dtype))
        self.count.assign_add(1)
