"""The fit wrapper: a run is a list of stages trained with one model and one optimizer.

`train(config)` checks everything it can before the first heavy step (records, names,
stages), picks the strategy and precision, then for each stage rebuilds the dataset at the
stage's image size, applies its freezing and LR multipliers and fits. After every epoch the
run folder is brought up to date, so a killed run resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from dataclasses import dataclass
from typing import Any

import tensorflow as tf

from kerastricks._fs import write_json_atomic
from kerastricks.config import Config, save_config
from kerastricks.data import build_dataset
from kerastricks.data.reader import read_errors_named
from kerastricks.losses import make_loss, make_metrics, monitor_for
from kerastricks.models import set_trainable
from kerastricks.optim import set_lr_multipliers
from kerastricks.plots import save_curves, save_lr_plot
from kerastricks.train.build import TrainingParts, build_parts, stage_multipliers
from kerastricks.train.checkpoints import RunCheckpoint
from kerastricks.train.epoch_callbacks import EpochRecorder, NaNGuard
from kerastricks.train.preflight import RunInputs, preflight
from kerastricks.train.records import (
    prepare_run_dir,
    print_stage_table,
    summarise_run,
)
from kerastricks.train.resize import carry_over, needs_rebuild
from kerastricks.train.resume import resumed_run_config, write_run_kind
from kerastricks.train.stages import StagePlan, plan_stages, trainable_groups
from kerastricks.train.strategy import (
    Hardware,
    detect_hardware,
    resolve_jit_compile,
    resolve_precision,
)


def train(
    config: Config,
    *,
    resume: str | None = None,
    overwrite: bool = False,
    hardware: Hardware | None = None,
) -> RunResult:
    """Runs every stage of `config`; returns the summary (also in summary.json) and model.

    Args:
        config: the validated run config.
        resume: a run folder to continue: its saved config, with the changes of `config`
            that a resume may apply (stages not started, evaluation, output); any other
            difference is refused (`kerastricks.train.resume`).
        overwrite: replace an existing run folder of the same name.
        hardware: an already-built strategy (the default detects one).
    """
    if resume is not None:
        config = _resumed_config(config, resume)
        run_dir = resume
    else:
        run_dir = os.path.join(config.output, config.name)
    # The strategy comes first: multi-worker collectives must be set up before anything
    # (reading records included) initialises TensorFlow's devices.
    hardware = hardware or detect_hardware(config.train.strategy)
    inputs = preflight(config)
    config = dataclasses.replace(
        config, train=dataclasses.replace(config.train, stages=inputs.stages)
    )
    precision = resolve_precision(config.train.precision, hardware.kind)
    tf.keras.mixed_precision.set_global_policy(precision)
    tf.keras.utils.set_random_seed(config.seed)
    if resume is None and hardware.is_chief:
        prepare_run_dir(run_dir, overwrite)
        write_run_kind(run_dir, "train")
    write_dir = run_dir if hardware.is_chief else _worker_dir(run_dir)
    save_config(config, os.path.join(write_dir, "config.yaml"))
    print(f"kerastricks: run folder {run_dir} | {hardware.describe()} | precision={precision}")
    try:
        summary, model, rows = _run(config, inputs, hardware, write_dir, run_dir)
        return RunResult(summary, run_dir, model, rows)
    finally:
        tf.keras.mixed_precision.set_global_policy("float32")
        if not hardware.is_chief:
            shutil.rmtree(write_dir, ignore_errors=True)


def _resumed_config(config: Config, run_dir: str) -> Config:
    """The saved run's config with the given config's changes that a resume may apply."""
    state = RunCheckpoint.peek(run_dir)
    epochs_done = len(state["rows"]) if state else 0
    return resumed_run_config(config, run_dir, "train", epochs_done=epochs_done)


def _run(
    config: Config, inputs: RunInputs, hardware: Hardware, run_dir: str, chief_dir: str
) -> tuple[dict[str, Any], tf.keras.Model, list[dict[str, Any]]]:
    source = inputs.source
    num_train = inputs.num_train
    plans = plan_stages(
        config.train.stages,
        num_train,
        config.train.batch_size,
        hardware.replicas,
        config.train.steps_per_epoch,
        config.train.accumulate_steps,
    )
    # train.scale_lr: the linear scaling rule, the config's LRs being one replica's.
    lr_scale = float(hardware.replicas) if config.train.scale_lr else 1.0
    saved = RunCheckpoint.peek(chief_dir)
    # A resumed fixed-size backbone is rebuilt at the size its checkpoint was saved at.
    size = saved["rows"][-1]["image_size"] if saved and saved["rows"] else None
    with hardware.strategy.scope():
        parts = build_parts(config, plans, source.num_classes, lr_scale, image_size=size)

    def rebuild(image_size: int) -> TrainingParts:
        with hardware.strategy.scope():
            fresh = build_parts(config, plans, source.num_classes, lr_scale, image_size)
            carry_over(parts, fresh)
        return fresh

    averaging = _averaging(config, parts.model, plans)
    extra = {"swa": averaging.state} if hasattr(averaging, "state") else None
    checkpoint = RunCheckpoint(run_dir, parts.model, parts.optimizer, extra=extra)
    # Every worker resumes from the chief's checkpoint (the run folder is shared storage).
    state = checkpoint.restore(chief_dir) or {
        "rows": [],
        "stage_times": {},
        "best": None,
    }
    if state["rows"]:
        print(f"kerastricks: resuming after epoch {len(state['rows'])} of {plans[-1].last_epoch}")
    monitor, mode = monitor_for(source.task)
    jit = resolve_jit_compile(config.train.jit_compile, hardware.kind)
    if not state["rows"]:
        _calibrate_bn(config, inputs, hardware, parts.model, plans[0])
    for plan in plans:
        if len(state["rows"]) >= plan.last_epoch:
            continue
        if needs_rebuild(parts.model, plan.stage.image_size):
            parts = rebuild(plan.stage.image_size)
            checkpoint.rebind(parts.model, parts.optimizer)
            if averaging is not None:
                averaging.set_model(parts.model)
            print(f"kerastricks: {config.model.backbone} rebuilt for {plan.stage.image_size}px")
        _fit_stage(
            config,
            inputs,
            hardware,
            parts,
            plan,
            state,
            checkpoint,
            jit,
            (monitor, mode),
            averaging,
        )
    if averaging is not None:
        averaging.finalize()
    checkpoint.export_last()
    summary = summarise_run(config, inputs, hardware, plans, state, (monitor, mode))
    summary["steps"] = int(parts.optimizer.iterations.numpy())
    write_json_atomic(os.path.join(run_dir, "summary.json"), summary)
    save_curves(
        state["rows"],
        monitor.removeprefix("val_"),
        os.path.join(run_dir, "plots", "curves.png"),
        schedule=parts.schedule,
        plans=plans,
    )
    save_lr_plot(
        parts.schedule,
        plans[-1].first_step + plans[-1].total_steps,
        [p.first_step for p in plans],
        os.path.join(run_dir, "plots", "lr.png"),
    )
    print_stage_table(summary)
    return summary, parts.model, state["rows"]


def _fit_stage(
    config: Config,
    inputs: RunInputs,
    hardware: Hardware,
    parts: TrainingParts,
    plan: StagePlan,
    state: dict[str, Any],
    checkpoint: RunCheckpoint,
    jit: bool,
    monitor: tuple[str, str],
    averaging: Any = None,
) -> None:
    stage = plan.stage
    groups_on = trainable_groups(stage.unfreeze, len(parts.groups))
    set_trainable(parts.model, parts.groups, groups_on)
    set_lr_multipliers(parts.optimizer, stage_multipliers(config, stage, len(parts.groups)))
    with hardware.strategy.scope():
        parts.model.compile(
            optimizer=getattr(parts.model, "optimizer", None) or parts.optimizer,
            loss=loss_for(config, inputs.source.task),
            metrics=make_metrics(inputs.source.task, inputs.source.num_classes),
            jit_compile=jit,
            steps_per_execution=config.train.steps_per_execution,
        )
    train_ds, val_ds = _stage_datasets(
        config, inputs, plan, hardware, epochs_done=len(state["rows"])
    )
    print(
        f"\n== stage {plan.index + 1}/{len(config.train.stages)} '{stage.name}': "
        f"{stage.image_size}px, {groups_on}/{len(parts.groups)} groups train, "
        f"{stage.epochs} epoch(s) x {plan.steps_per_epoch} steps, global batch {plan.global_batch}"
    )
    recorder = EpochRecorder(
        parts.optimizer, parts.schedule, plan, state, checkpoint, monitor, averaging
    )
    if hasattr(averaging, "bn_data"):
        # SWA recomputes BatchNorm statistics of the average on this stage's training data.
        averaging.bn_data = train_ds
        averaging.bn_steps = min(plan.steps_per_epoch, 20)
    callbacks = [
        *([averaging] if averaging is not None else []),
        recorder,
        NaNGuard(stage.name or str(plan.index), plan),
        tf.keras.callbacks.TensorBoard(
            os.path.join(checkpoint.folder, "..", "tensorboard"), profile_batch=0
        ),
    ]
    # TensorFlow's DataLossError names no file: say which records and shards to check.
    with read_errors_named(inputs.source):
        parts.model.fit(
            train_ds,
            epochs=plan.last_epoch,
            initial_epoch=len(state["rows"]),
            steps_per_epoch=plan.steps_per_epoch,
            validation_data=val_ds,
            validation_steps=_validation_steps(config, inputs, plan),
            callbacks=callbacks,
            verbose=config.train.verbose,
        )
    if len(state["rows"]) < plan.last_epoch:
        raise RuntimeError(
            f"stage '{stage.name}' stopped after epoch {len(state['rows'])} of {plan.last_epoch}"
        )
    if config.train.explain and hardware.is_chief:
        _explain_stage(parts.model, val_ds, inputs.source, checkpoint.folder, stage.name)


def _explain_stage(
    model: tf.keras.Model, val_ds: tf.data.Dataset, source: Any, folder: str, name: str
) -> None:
    """Grad-CAM grid of one validation batch: is the model looking at the object?"""
    from kerastricks.explain import save_grad_cam_grid

    images, labels = next(iter(val_ds))[:2]
    path = os.path.join(folder, "..", "plots", f"gradcam_{name}.png")
    save_grad_cam_grid(
        model, images.numpy(), labels.numpy().argmax(axis=1), list(source.class_names), path
    )


def _validation_steps(config: Config, inputs: RunInputs, plan: StagePlan) -> int | None:
    # A cap above the held-out fold's batch count makes Keras warn that it ran out of data.
    if config.train.validation_steps is None:
        return None
    available = -(-inputs.num_val // plan.global_batch)
    return max(1, min(config.train.validation_steps, available))


def _calibrate_bn(
    config: Config, inputs: RunInputs, hardware: Hardware, model: tf.keras.Model, plan: StagePlan
) -> None:
    """Data-dependent BatchNorm statistics for a randomly initialised backbone: its initial
    statistics (mean 0, variance 1) let activations grow without bound through a deep
    network in inference mode (measured: efficientnet_b0 features ~1e14), which makes a
    frozen-backbone stage meaningless."""
    from kerastricks.callbacks import update_bn

    wanted = config.model.calibrate_bn
    if wanted is False or (wanted is None and config.model.weights is not None):
        return
    train_ds, _ = _stage_datasets(config, inputs, plan, hardware)
    batches = update_bn(model, train_ds, steps=10)
    print(f"kerastricks: BatchNorm statistics calibrated on {batches} training batches")


def _averaging(config: Config, model: tf.keras.Model, plans: list[StagePlan]) -> Any:
    """The run's weight-averaging callback (EMA or SWA), built once for all stages."""
    from kerastricks.callbacks import ModelEMA, StochasticWeightAveraging

    if config.train.ema is not None:
        averaging = ModelEMA()
        averaging.set_model(model)
        return averaging
    if config.train.swa is not None:
        averaging = StochasticWeightAveraging(config.train.swa, total_epochs=plans[-1].last_epoch)
        averaging.build(model)
        return averaging
    return None


def loss_for(config: Config, task: str) -> tf.keras.losses.Loss:
    """The run's loss: from the target type, with smoothing (classification) or focal."""
    train = config.train
    if task == "regression":
        loss = train.loss if train.loss in ("mse", "mae", "huber") else "mse"
        return make_loss(task, regression=loss)
    focal = train.loss == "focal"
    return make_loss(
        task,
        label_smoothing=train.label_smoothing,
        focal_gamma=train.focal_gamma if focal else None,
        focal_alpha=train.focal_alpha if focal else None,
    )


def _stage_datasets(
    config: Config,
    inputs: RunInputs,
    plan: StagePlan,
    hardware: Hardware,
    epochs_done: int = 0,
) -> tuple[tf.data.Dataset, tf.data.Dataset]:
    """The stage's training and validation datasets at its image size.

    `epochs_done`: run-wide epochs already trained (a resumed run). With `data.deterministic`,
    a stage resumed after some of its epochs skips the batches those epochs consumed, so
    that it continues its input stream where the killed run stopped and trains on the same
    batches in the same order as an uninterrupted run. The skipped batches are read and
    decoded, not trained on: a one-off cost of the input pipeline at the resume.
    """
    data = config.data
    common = {
        "image_size": plan.stage.image_size,
        "seed": config.seed,
        "keys": data.keys,
        "num_classes": inputs.source.num_classes,
        "deterministic": bool(data.deterministic),
    }
    train_ds = build_dataset(
        inputs.source,
        training=True,
        batch_size=plan.update_batch,
        augment=config.augment or None,
        exclude_folds=[data.val_fold],
        resize=data.resize,
        cache=data.cache or None,
        extra_records=data.extra_records,
        with_weights=data.extra_records is not None,
        **common,
    )
    consumed = max(0, epochs_done - plan.first_epoch) * plan.steps_per_epoch
    if data.deterministic and consumed:
        print(f"kerastricks: skipping the {consumed} batches the stage has trained on")
        train_ds = train_ds.skip(consumed)
    val_ds = build_dataset(
        inputs.source,
        training=False,
        batch_size=plan.global_batch,
        folds=[data.val_fold],
        **common,
    )
    if hardware.name == "multi_worker":
        # Our folds are few shards; sharding by element keeps every worker busy.
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = (
            tf.data.experimental.AutoShardPolicy.DATA
        )
        train_ds = train_ds.with_options(options)
        val_ds = val_ds.with_options(options)
    return train_ds, val_ds


@dataclass
class RunResult:
    """What `train` returns.

    Args:
        summary: the content of summary.json.
        run_dir: the run folder.
        model: the trained model (last weights).
        history: one row per finished epoch, across stages (history.csv).
    """

    summary: dict[str, Any]
    run_dir: str
    model: tf.keras.Model
    history: list[dict[str, Any]]


def _worker_dir(run_dir: str) -> str:
    # Non-chief workers of a multi-worker run must still write their checkpoints (saving is
    # collective), but never into the chief's run folder, which the chief may be creating.
    import tempfile

    return tempfile.mkdtemp(prefix="kerastricks-worker-")
