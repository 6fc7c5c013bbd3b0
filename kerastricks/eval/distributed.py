"""Prediction under a distribution strategy: every batch runs on every replica.

A TPU needs static shapes and holds no strings, so the stream is re-batched to exactly the
global batch (per-replica batch x replicas), its last partial batch padded with zero rows and
a `valid` mask; only the images reach the devices. After the step, each replica's rows are
concatenated in replica order (the order in which the strategy split the batch) and the
padded rows dropped, so outputs stay aligned with the ids and labels kept on the host.

Example:

```python
strategy = prediction_strategy(hardware)
outputs, (labels, ids) = predict_distributed(
    lambda images: model(images, training=False), dataset, strategy, global_batch=128
)
```
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf


def prediction_strategy(hardware: Any = None) -> tf.distribute.Strategy:
    """The strategy that predictions run under for a `Hardware` (None: the current one,
    `tf.distribute.get_strategy()`, which is the default one-replica strategy outside any
    scope)."""
    if hardware is None:
        return tf.distribute.get_strategy()
    if hardware.name == "multi_worker":
        # A worker sees only its own replicas' rows, and ids (strings) cannot travel through
        # collectives; every worker needs every prediction (the chief writes them), so each
        # predicts the whole set on its own device.
        return tf.distribute.get_strategy()
    return hardware.strategy


def global_batch_size(per_replica: int, strategy: tf.distribute.Strategy) -> int:
    """Per-replica batch x replicas in sync: the batch that one step consumes."""
    if per_replica < 1:
        raise ValueError(f"batch size: expected a positive per-replica batch, got {per_replica}")
    return per_replica * strategy.num_replicas_in_sync


def pad_batches(dataset: tf.data.Dataset, global_batch: int) -> tf.data.Dataset:
    """Re-batches a batched dataset of tuples to exactly `global_batch` rows per element,
    the last batch padded with zero (or empty-string) rows; appends a bool `valid` [B] mask.

    Every component gets a static batch dimension, as a TPU requires.
    """
    if global_batch < 1:
        raise ValueError(f"global_batch: expected a positive batch size, got {global_batch}")

    def pad(*element: tf.Tensor) -> tuple[tf.Tensor, ...]:
        rows = tf.shape(element[0])[0]
        missing = global_batch - rows
        padded = []
        for tensor in element:
            # tf.zeros of a string dtype is "", so ids pad like numbers.
            filler = tf.zeros(tf.concat([[missing], tf.shape(tensor)[1:]], 0), tensor.dtype)
            full = tf.concat([tensor, filler], axis=0)
            padded.append(tf.ensure_shape(full, [global_batch, *tensor.shape[1:]]))
        return (*padded, tf.range(global_batch) < rows)

    return dataset.rebatch(global_batch).map(pad)


def predict_distributed(
    forward: Callable[[tf.Tensor], tf.Tensor],
    dataset: tf.data.Dataset,
    strategy: tf.distribute.Strategy,
    global_batch: int,
    *,
    steps: int | None = None,
    verbose: int = 0,
    jit_compile: bool = False,
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Runs `forward` on the images of a batched `(images, *host)` dataset on every replica
    of `strategy`; returns its outputs and the host components, valid rows only, in
    dataset order.

    Args:
        forward: images `[b, H, W, C]` -> one tensor `[b, ...]`; run per replica (XLA-compiled
            with `jit_compile`, as on a TPU).
        dataset: batched tuples whose first component is the images; the others (labels,
            string ids) never leave the host.
        strategy: the strategy whose scope built the model.
        global_batch: rows per step, a multiple of the replicas in sync.
        steps: batches in the dataset, for the progress bar (None: unknown).
        verbose: 0 silent, 1 a progress bar, 2 one line at the end.
        jit_compile: compile the per-replica step with XLA.
    """
    replicas = strategy.num_replicas_in_sync
    if global_batch % replicas:
        raise ValueError(
            f"global_batch {global_batch} is not a multiple of the {replicas} replicas in sync; "
            "pass the per-replica batch x replicas"
        )
    # Elements stay in host memory: the ids are strings, which a TPU cannot hold; strategy.run
    # copies only the images to the devices.
    options = tf.distribute.InputOptions(experimental_fetch_to_device=False)
    distributed = strategy.experimental_distribute_dataset(
        pad_batches(dataset, global_batch), options
    )
    replica_step = tf.function(forward, jit_compile=True) if jit_compile else forward

    @tf.function
    def step(images: Any) -> Any:
        return strategy.run(replica_step, args=(images,))

    progbar = tf.keras.utils.Progbar(steps, verbose=verbose, unit_name="batch") if verbose else None
    outputs: list[np.ndarray] = []
    host: list[list[np.ndarray]] = []
    for index, (images, *rest, valid) in enumerate(distributed):
        per_replica = strategy.experimental_local_results(step(images))
        mask = _local_rows(strategy, valid)
        outputs.append(np.concatenate([o.numpy() for o in per_replica])[mask])
        host.append([_local_rows(strategy, part)[mask] for part in rest])
        if progbar is not None:
            progbar.update(index + 1)
    if progbar is not None and progbar.target != len(outputs):
        progbar.update(len(outputs), finalize=True)
    if not outputs:
        raise ValueError("predict: the dataset holds no images (no batch to predict)")
    columns = [np.concatenate(parts) for parts in zip(*host, strict=True)]
    return np.concatenate(outputs), columns


def _local_rows(strategy: tf.distribute.Strategy, value: Any) -> np.ndarray:
    """The rows of a per-replica value, replica after replica (the order of the batch)."""
    return np.concatenate([v.numpy() for v in strategy.experimental_local_results(value)])
