"""`fit_stages` and `fine_tune`: the stage runner on any tf.keras model and your own tf.data.

fastai's Learner trains any model; so does this. A run is a list of `Stage`s (the YAML
schema's `train.stages[]` entries: epochs, image size, unfrozen groups, LR and schedule,
LR multipliers, batch size). `fit_stages` trains them one after another with one optimizer
and one run-wide schedule, which is what `kerastricks train CONFIG` does with a config's model
and records (both call `kerastricks.train.engine.run_stages`). `fine_tune` is fastai's recipe
on top: a frozen one-cycle stage, then everything unfrozen with discriminative LRs.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import tensorflow as tf

from kerastricks.config import ConfigError, StageConfig
from kerastricks.config.validate import check_stage
from kerastricks.models import LayerGroup
from kerastricks.models.layer_decay import LRPartition, lr_partition
from kerastricks.train.build import TrainingParts, spread_multipliers, training_parts
from kerastricks.train.engine import StageRun, run_stages
from kerastricks.train.stages import fine_tune_stages
from kerastricks.train.strategy import hardware_of, resolve_jit_compile, resolve_precision
from kerastricks.train.user_data import (
    UserDatasets,
    check_fit_resume,
    groups_of,
    model_factory,
    plan_user_stages,
    write_fit_record,
)

# The Python name of a stage: the same dataclass as the YAML schema's `train.stages[]`.
Stage = StageConfig
_MAX_MODES = ("acc", "auc", "f1", "precision", "recall", "score")

__all__ = ["FitHistory", "Stage", "fine_tune", "fit_stages"]


def fit_stages(
    model: tf.keras.Model | Callable[[], tf.keras.Model],
    stages: Sequence[Stage | Mapping[str, Any]],
    datasets: Any,
    *,
    loss: Any,
    metrics: Sequence[Any] | None = None,
    groups: int | Sequence[LayerGroup | Sequence[tf.keras.layers.Layer]] | None = None,
    lr_mult: Mapping[str, Any] | Sequence[float] | None = None,
    batch_size: int | None = None,
    optimizer: str = "adamw",
    weight_decay: float = 0.05,
    optimizer_kwargs: Mapping[str, Any] | None = None,
    strategy: tf.distribute.Strategy | None = None,
    precision: str | None = None,
    jit_compile: bool | str = "auto",
    steps_per_execution: int = 1,
    steps_per_epoch: int | None = None,
    validation_steps: int | None = None,
    accumulate_steps: int = 1,
    ema: float | None = None,
    swa: int | float | None = None,
    run_dir: str | None = None,
    resume: bool = True,
    monitor: str = "val_loss",
    mode: str = "auto",
    callbacks: Sequence[tf.keras.callbacks.Callback] = (),
    verbose: int = 1,
) -> FitHistory:
    """Trains any tf.keras model through a list of stages; returns the history of all of them.

    Each stage freezes every layer group but the last `unfreeze` ones (the frozen groups'
    BatchNorm runs in inference mode), sets its per-group LR multipliers, and trains its
    epochs at its image size over one schedule that runs across the stages by global step.
    With `run_dir`, every epoch ends with a checkpoint (weights, optimizer state, history),
    the best weights by `monitor` are kept, and a killed run called again with the same
    arguments continues after its last finished epoch.

    Example:

    ```python
    def datasets(image_size):  # your own tf.data, rebuilt at each stage's size
        return make_train(image_size).batch(32), make_val(image_size).batch(64)

    history = fit_stages(
        model,
        [Stage(epochs=1, image_size=24, unfreeze="head", lr=3e-3),
         Stage(epochs=3, image_size=32, lr=1e-3, lr_mult={"slice": [1e-5, 1e-3]})],
        datasets,
        loss=tf.keras.losses.CategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        run_dir="runs/mine",
    )
    history.history["val_accuracy"]
    ```

    Args:
        model: a built tf.keras model, or a function of no arguments that builds one. Under
            a distribution strategy (or to set `precision`), give the function: the model
            must be created inside the strategy's scope, which `fit_stages` enters for it.
        stages: `Stage`s (or dicts of their fields), in order. With fixed datasets a stage's
            `image_size` is only a label (the dataset's own size is recorded).
        datasets: `(train_ds, val_ds)` (`val_ds` may be None) when sizes do not change, or a
            function of the stage's image size returning them; a function of two arguments
            also gets the batch size of one update (`batch_size` x replicas x
            `accumulate_steps`). Batched `tf.data.Dataset`s of `(x, y)` or `(x, y, weight)`.
        loss: the loss (a Keras loss object or name).
        metrics: Keras metrics.
        groups: the layer groups, input side first, head last: LayerGroups, lists of
            layers, or a number of groups to split the model into (`layer_groups`; None:
            its natural groups).
        lr_mult: per-group LR multipliers of every stage without its own `lr_mult`:
            `{"slice": [lo, hi]}`, `{"layer_decay": 0.75}` or a list (`spread_lrs`).
        batch_size: per-replica batch of stages without their own, passed to a `datasets`
            function of two arguments; None reads it from the dataset's static batch size.
        optimizer: an optimizer name (`kerastricks.optim.list_optimizers()`).
        weight_decay: decoupled weight decay, never on biases and norm weights.
        optimizer_kwargs: more arguments of the optimizer.
        strategy: a `tf.distribute.Strategy` (None: the current one).
        precision: `float32`, `mixed_float16`, `mixed_bfloat16` or `auto` (bfloat16 on TPU,
            float16 on GPU), set before a model function builds the model; None leaves the
            global policy as it is.
        jit_compile: XLA for the train step: true, false or `auto` (on TPU only).
        steps_per_execution: train steps per call into the device (matters on TPU).
        steps_per_epoch: optimizer updates per epoch; None: one pass over the training
            dataset, whose length must then be known (`dataset.cardinality()`).
        validation_steps: cap on validation batches per epoch.
        accumulate_steps: gradient accumulation: each update averages this many slices of
            a batch.
        ema: EMA of the weights with this decay; validation, best and last weights are the
            averaged model's.
        swa: stochastic weight averaging from this epoch (int, 1-based) or fraction of the
            run.
        run_dir: folder for checkpoints (`checkpoints/`), `history.csv`, the best and last
            weights and TensorBoard logs; None writes nothing (and cannot resume).
        resume: continue the run saved in `run_dir`; False refuses a folder that holds one.
        monitor: the history key whose best value keeps `checkpoints/best.weights.h5`.
        mode: `min`, `max`, or `auto` (max for accuracy-like names).
        callbacks: more Keras callbacks, given to every stage's `fit`.
        verbose: Keras progress bar mode.

    Returns:
        A `FitHistory`: `history.history` maps each metric to one value per epoch across
        the stages, `history.rows` holds history.csv's rows, `history.model` the model.
    """
    stages = _resolve_stages(stages)
    hardware = hardware_of(strategy)
    factory = model_factory(model, hardware.strategy, precision)
    source = UserDatasets(datasets)
    plans = plan_user_stages(
        stages, source, hardware.replicas, batch_size, steps_per_epoch, accumulate_steps
    )
    write_dir = run_dir
    if run_dir is not None:
        check_fit_resume(run_dir, plans, resume)
        if not hardware.is_chief:
            # Saving is collective, so every worker writes, but not into the chief's folder.
            write_dir = tempfile.mkdtemp(prefix="kerastricks-worker-")
    policy = tf.keras.mixed_precision.global_policy()
    if precision is not None:
        tf.keras.mixed_precision.set_global_policy(resolve_precision(precision, hardware.kind))

    def build(image_size: int | None) -> TrainingParts:
        built = factory()
        split = groups_of(built, groups)
        partition = lr_partition(built, split)
        return training_parts(
            built,
            split,
            plans,
            optimizer=optimizer,
            weight_decay=weight_decay,
            optimizer_kwargs=dict(optimizer_kwargs or {}),
            multipliers=multipliers(plans[0].stage, partition),
            partition=partition,
            ema=ema,
            accumulate_steps=accumulate_steps,
        )

    def multipliers(stage: Stage, partition: LRPartition) -> list[float]:
        return spread_multipliers(
            stage.lr_mult if stage.lr_mult is not None else lr_mult, partition
        )

    run = StageRun(
        hardware=hardware,
        plans=plans,
        build=build,
        datasets=source.for_plan,
        multipliers=multipliers,
        loss=loss,
        metrics=lambda: list(metrics or []),
        monitor=(monitor, _mode(monitor, mode)),
        run_dir=write_dir,
        restore_dir=run_dir,
        jit_compile=resolve_jit_compile(jit_compile, hardware.kind),
        steps_per_execution=steps_per_execution,
        validation_steps=lambda plan: validation_steps,
        ema=ema,
        swa=swa,
        verbose=verbose,
        callbacks=list(callbacks),
    )
    try:
        if run_dir is not None and hardware.is_chief:
            write_fit_record(run_dir, plans)
        result = run_stages(run)
    finally:
        tf.keras.mixed_precision.set_global_policy(policy)
        if write_dir != run_dir:
            shutil.rmtree(write_dir, ignore_errors=True)
    steps = int(result.parts.optimizer.iterations.numpy())
    return FitHistory(result.state["rows"], result.parts.model, result.state["best"], steps)


def fine_tune(
    model: tf.keras.Model | Callable[[], tf.keras.Model],
    datasets: Any,
    epochs: int,
    base_lr: float = 2e-3,
    freeze_epochs: int = 1,
    *,
    lr_mult: float = 100.0,
    image_size: int | None = None,
    **kwargs: Any,
) -> FitHistory:
    """fastai's `fine_tune`: train the head on the frozen body, then everything.

    Stage 1: `freeze_epochs` epochs of one-cycle (pct_start 0.99) at `base_lr` with only the
    head group trainable. Stage 2: `base_lr` halved, every group trainable, `epochs` epochs
    of one-cycle (pct_start 0.3, div 5) over discriminative LRs `slice(base_lr / 2 /
    lr_mult, base_lr / 2)` from the first group to the head. The YAML recipe
    `train.recipe: {name: fine_tune}` expands into the same two stages.

    Example:

    ```python
    history = fine_tune(model, (train_ds, val_ds), epochs=3, loss="categorical_crossentropy")
    ```

    Args:
        model: a built model, or a function that builds one (see `fit_stages`).
        datasets: `(train_ds, val_ds)` or a function of the image size (see `fit_stages`).
        epochs: epochs after the frozen stage.
        base_lr: the frozen stage's peak LR; the unfrozen stage peaks at half of it.
        freeze_epochs: epochs with only the head training.
        lr_mult: how much slower the first group trains than the head (fastai: 100).
        image_size: the image size passed to a `datasets` function (needed then).
        **kwargs: `fit_stages`' keyword arguments (`loss` is required).
    """
    if image_size is None and callable(datasets) and not isinstance(datasets, tf.data.Dataset):
        raise ValueError("fine_tune: datasets is a function of the image size; give image_size=...")
    stages = fine_tune_stages(epochs, image_size, base_lr, freeze_epochs, lr_mult)
    return fit_stages(model, stages, datasets, **kwargs)


class FitHistory(tf.keras.callbacks.History):
    """What `fit_stages` returns: Keras' `History` over every stage, and the run's rows.

    Args:
        rows: one dict per epoch (history.csv's rows): `epoch`, `stage`, `stage_name`,
            `image_size`, `lr`, the logged metrics, `time_s`, `img_per_s`.
        model: the trained model (the one a model function built).
        best: the best value of the monitored metric (None if it was never logged).
        steps: optimizer updates in all.
    """

    def __init__(
        self, rows: list[dict[str, Any]], model: tf.keras.Model, best: float | None, steps: int
    ) -> None:
        super().__init__()
        self.rows = rows
        self.epoch = [row["epoch"] for row in rows]
        keys = [k for k in dict.fromkeys(k for row in rows for k in row) if k != "epoch"]
        self.history = {key: [row.get(key) for row in rows] for key in keys}
        self.best = best
        self.steps = steps
        self.set_model(model)


def _resolve_stages(stages: Sequence[Stage | Mapping[str, Any]]) -> list[Stage]:
    if isinstance(stages, (StageConfig, Mapping)) or not stages:
        raise ValueError(f"stages: expected a non-empty list of Stage; received {stages!r}")
    resolved = []
    for i, stage in enumerate(stages):
        if isinstance(stage, Mapping):
            stage = Stage(**stage)
        if not isinstance(stage, StageConfig):
            raise TypeError(f"stages[{i}]: expected a Stage or a dict; received {stage!r}")
        try:
            check_stage(stage, f"stages[{i}]")
        except ConfigError as error:
            raise ValueError(str(error)) from None
        resolved.append(dataclasses.replace(stage, name=stage.name or f"stage{i + 1}"))
    return resolved


def _mode(monitor: str, mode: str) -> str:
    if mode in ("min", "max"):
        return mode
    if mode != "auto":
        raise ValueError(f"mode: expected 'auto', 'min' or 'max'; received {mode!r}")
    return "max" if any(part in monitor for part in _MAX_MODES) else "min"
