"""The stage loop that `fit_stages` and `train(config)` share.

A `StageRun` says what to train and how: the strategy, the stage plans, how to build the
model's parts, how to get a stage's datasets, the loss and the folder to checkpoint into.
`run_stages` then, for each stage not finished yet: freezes the groups the stage does not
train (their BatchNorm in inference mode), sets its LR multipliers, compiles, fits its epochs
over the run-wide schedule, and after every epoch records a history row, keeps the best
weights and checkpoints the run, so that a killed run resumes where it stopped.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import tensorflow as tf

from kerastricks.models import set_trainable
from kerastricks.optim import set_lr_multipliers
from kerastricks.train.build import TrainingParts
from kerastricks.train.checkpoints import RunCheckpoint
from kerastricks.train.epoch_callbacks import EpochRecorder, NaNGuard
from kerastricks.train.stages import StagePlan, trainable_groups
from kerastricks.train.strategy import Hardware

Datasets = tuple[tf.data.Dataset, tf.data.Dataset | None]


@dataclass
class StageRun:
    """Everything the stage loop needs, whoever assembled it (a config, or Python arguments).

    Args:
        hardware: the strategy and its replicas.
        plans: the stages with their batches and steps (`plan_stages`, `plan_from_steps`).
        build: builds the parts at an image size (None: the first stage's); called inside
            the strategy's scope.
        datasets: `(plan, epochs_done) -> (train_ds, val_ds)` of a stage; `epochs_done` is
            the run-wide count of finished epochs (a resumed stage may skip what it trained).
        multipliers: `(stage, parts.partition) -> LR multipliers` of a stage, one per list.
        loss: the compiled loss.
        metrics: a factory of the compiled metrics (fresh objects for every compile).
        monitor: `(history key, "max" or "min")` that picks the best weights.
        run_dir: the folder this process writes (checkpoints, history.csv, TensorBoard);
            None writes nothing and cannot resume.
        restore_dir: the folder to resume from (a multi-worker run's chief folder); default
            `run_dir`.
        jit_compile: XLA-compile the train step.
        steps_per_execution: train steps per call into the device.
        validation_steps: cap on validation batches per stage (`plan -> int or None`).
        ema: EMA decay of the weights (the optimizer's own EMA: `build` turns it on).
        swa: stochastic weight averaging from this epoch (int, 1-based) or fraction.
        verbose: Keras progress bar mode.
        rebuild: `(parts, image_size) -> new parts or None`, for models that must be built
            again at a new image size (fixed-size backbones).
        before_first_epoch: called with the parts before a fresh run's first stage.
        after_stage: called with `(parts, plan, val_ds)` after each stage.
        callbacks: more Keras callbacks for every stage.
        row_fields: more columns of a stage's history rows (`plan -> {column: value}`), e.g.
            which stored image sizes it reads.
        input_errors: a context manager around `fit` that explains input errors (which
            records to check when TensorFlow's DataLossError names no file).
    """

    hardware: Hardware
    plans: list[StagePlan]
    build: Callable[[int | None], TrainingParts]
    datasets: Callable[[StagePlan, int], Datasets]
    multipliers: Callable[[Any, Any], list[float]]
    loss: Any
    metrics: Callable[[], list[Any]]
    monitor: tuple[str, str]
    run_dir: str | None = None
    restore_dir: str | None = None
    jit_compile: bool = False
    steps_per_execution: int = 1
    validation_steps: Callable[[StagePlan], int | None] = lambda plan: None
    ema: float | None = None
    swa: int | float | None = None
    verbose: int = 1
    rebuild: Callable[[TrainingParts, int], TrainingParts | None] | None = None
    before_first_epoch: Callable[[TrainingParts], None] | None = None
    after_stage: Callable[[TrainingParts, StagePlan, Any], None] | None = None
    callbacks: Sequence[tf.keras.callbacks.Callback] = field(default_factory=list)
    row_fields: Callable[[StagePlan], dict[str, Any]] = lambda plan: {}
    input_errors: Callable[[], AbstractContextManager] = nullcontext


@dataclass
class StageResult:
    """What `run_stages` leaves: the trained parts and the run's state.

    Args:
        parts: model, groups, optimizer and schedule (the model holds the last weights, or
            the averaged ones with EMA/SWA).
        state: `rows` (one history row per epoch), `stage_times`, `best`.
    """

    parts: TrainingParts
    state: dict[str, Any]


def saved_state(folder: str | None) -> dict[str, Any] | None:
    """The saved state of a run folder (None if none or fresh)."""
    return RunCheckpoint.peek(folder) if folder else None


def run_stages(run: StageRun) -> StageResult:
    """Trains every stage of `run` not finished yet; see the module docs."""
    plans = run.plans
    restore_dir = run.restore_dir or run.run_dir
    saved = saved_state(restore_dir)
    # A resumed fixed-size backbone is rebuilt at the size its checkpoint was saved at.
    size = saved["rows"][-1]["image_size"] if saved and saved["rows"] else None
    with run.hardware.strategy.scope():
        parts = run.build(size)
    averaging = _averaging(run.ema, run.swa, parts.model, plans[-1].last_epoch)
    checkpoint = None
    state = None
    if run.run_dir is not None:
        extra = {"swa": averaging.state} if hasattr(averaging, "state") else None
        checkpoint = RunCheckpoint(run.run_dir, parts.model, parts.optimizer, extra=extra)
        # Every worker resumes from the chief's checkpoint (the run folder is shared storage).
        state = checkpoint.restore(restore_dir)
    state = state or {"rows": [], "stage_times": {}, "best": None}
    if state["rows"]:
        print(f"kerastricks: resuming after epoch {len(state['rows'])} of {plans[-1].last_epoch}")
    elif run.before_first_epoch is not None:
        run.before_first_epoch(parts)
    for plan in plans:
        if len(state["rows"]) >= plan.last_epoch:
            continue
        fresh = run.rebuild(parts, plan.stage.image_size) if run.rebuild else None
        if fresh is not None:
            parts = fresh
            if checkpoint is not None:
                checkpoint.rebind(parts.model, parts.optimizer)
            if averaging is not None:
                averaging.set_model(parts.model)
        _fit_stage(run, parts, plan, state, checkpoint, averaging)
    if averaging is not None:
        averaging.finalize()
    if checkpoint is not None:
        checkpoint.export_last()
    return StageResult(parts, state)


def _fit_stage(
    run: StageRun,
    parts: TrainingParts,
    plan: StagePlan,
    state: dict[str, Any],
    checkpoint: RunCheckpoint | None,
    averaging: Any,
) -> None:
    stage = plan.stage
    groups_on = enter_stage(parts, stage, run.multipliers(stage, parts.partition))
    with run.hardware.strategy.scope():
        parts.model.compile(
            optimizer=_compiled_optimizer(parts.model, parts.optimizer),
            loss=run.loss,
            metrics=run.metrics(),
            jit_compile=run.jit_compile,
            steps_per_execution=run.steps_per_execution,
        )
    train_ds, val_ds = run.datasets(plan, len(state["rows"]))
    print(
        f"\n== stage {plan.index + 1}/{len(run.plans)} '{stage.name}': "
        f"{stage.image_size}px, {groups_on}/{len(parts.groups)} groups train, "
        f"{stage.epochs} epoch(s) x {plan.steps_per_epoch} steps"
        + (f", global batch {plan.global_batch}" if plan.global_batch else "")
    )
    recorder = EpochRecorder(
        parts.optimizer,
        parts.schedule,
        plan,
        state,
        checkpoint,
        run.monitor,
        averaging,
        fields=run.row_fields(plan),
    )
    if hasattr(averaging, "bn_data"):
        # SWA recomputes BatchNorm statistics of the average on this stage's training data.
        averaging.bn_data = train_ds
        averaging.bn_steps = min(plan.steps_per_epoch, 20)
    callbacks = [
        *([averaging] if averaging is not None else []),
        recorder,
        NaNGuard(stage.name or str(plan.index), plan),
        *run.callbacks,
    ]
    if run.run_dir is not None:
        log_dir = os.path.join(run.run_dir, "tensorboard")
        callbacks.append(tf.keras.callbacks.TensorBoard(log_dir, profile_batch=0))
    with run.input_errors():
        parts.model.fit(
            train_ds,
            epochs=plan.last_epoch,
            initial_epoch=len(state["rows"]),
            steps_per_epoch=plan.steps_per_epoch,
            validation_data=val_ds,
            validation_steps=run.validation_steps(plan) if val_ds is not None else None,
            callbacks=callbacks,
            verbose=run.verbose,
        )
    if len(state["rows"]) < plan.last_epoch:
        raise RuntimeError(
            f"stage '{stage.name}' stopped after epoch {len(state['rows'])} of {plan.last_epoch}"
        )
    if run.after_stage is not None:
        run.after_stage(parts, plan, val_ds)


def enter_stage(parts: TrainingParts, stage: Any, multipliers: list[float]) -> int:
    """Freezes the layer groups `stage.unfreeze` keeps frozen and sets the stage's LR
    multipliers; returns how many groups train."""
    groups_on = trainable_groups(stage.unfreeze, len(parts.groups))
    set_trainable(parts.model, parts.groups, groups_on)
    set_lr_multipliers(parts.optimizer, multipliers)
    return groups_on


def _compiled_optimizer(model: tf.keras.Model, optimizer: Any) -> Any:
    # After the first compile the model may hold our optimizer wrapped (a LossScaleOptimizer
    # under mixed_float16): compiling with that again keeps the loss scale. A model compiled
    # before by its user holds another optimizer, which is replaced.
    current = getattr(model, "optimizer", None)
    if current is optimizer or getattr(current, "inner_optimizer", None) is optimizer:
        return current
    return optimizer


def _averaging(
    ema: float | None, swa: int | float | None, model: tf.keras.Model, total_epochs: int
) -> Any:
    """The run's weight-averaging callback (EMA or SWA), built once for all stages."""
    from kerastricks.callbacks import ModelEMA, StochasticWeightAveraging

    if ema is not None:
        averaging = ModelEMA()
        averaging.set_model(model)
        return averaging
    if swa is not None:
        averaging = StochasticWeightAveraging(swa, total_epochs=total_epochs)
        averaging.build(model)
        return averaging
    return None
