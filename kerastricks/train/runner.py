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
from kerastricks.data.pipeline import stored_sizes_used
from kerastricks.data.reader import read_errors_named
from kerastricks.losses import make_loss, make_metrics, monitor_for
from kerastricks.plots import save_curves, save_lr_plot
from kerastricks.train.build import TrainingParts, build_parts, stage_multipliers
from kerastricks.train.checkpoints import RunCheckpoint
from kerastricks.train.engine import StageRun, run_stages
from kerastricks.train.preflight import RunInputs, preflight
from kerastricks.train.reports import (
    prepare_run_dir,
    print_stage_table,
    summarise_run,
)
from kerastricks.train.resize import carry_over, needs_rebuild
from kerastricks.train.resume import resumed_run_config, write_run_kind
from kerastricks.train.stages import StagePlan, plan_stages
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
    plans = plan_stages(
        config.train.stages,
        inputs.num_train,
        config.train.batch_size,
        hardware.replicas,
        config.train.steps_per_epoch,
        config.train.accumulate_steps,
    )
    monitor, mode = monitor_for(inputs.source.task)
    result = run_stages(config_stage_run(config, inputs, hardware, plans, run_dir, chief_dir))
    parts, state = result.parts, result.state
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


def config_stage_run(
    config: Config,
    inputs: RunInputs,
    hardware: Hardware,
    plans: list[StagePlan],
    run_dir: str,
    chief_dir: str,
) -> StageRun:
    """The stage loop's inputs from a config: its model, records, loss and run folder."""
    source = inputs.source
    # train.scale_lr: the linear scaling rule, the config's LRs being one replica's.
    lr_scale = float(hardware.replicas) if config.train.scale_lr else 1.0

    def build(image_size: int | None) -> TrainingParts:
        return build_parts(config, plans, source.num_classes, lr_scale, image_size)

    def rebuild(parts: TrainingParts, image_size: int) -> TrainingParts | None:
        if not needs_rebuild(parts.model, image_size):
            return None
        with hardware.strategy.scope():
            fresh = build(image_size)
            carry_over(parts, fresh)
        print(f"kerastricks: {config.model.backbone} rebuilt for {image_size}px")
        return fresh

    def datasets(plan: StagePlan, epochs_done: int) -> tuple[tf.data.Dataset, tf.data.Dataset]:
        return stage_datasets(config, inputs, plan, hardware, epochs_done)

    def calibrate_bn(parts: TrainingParts) -> None:
        _calibrate_bn(config, inputs, hardware, parts.model, plans[0])

    def after_stage(parts: TrainingParts, plan: StagePlan, val_ds: tf.data.Dataset) -> None:
        if config.train.explain and hardware.is_chief:
            _explain_stage(parts.model, val_ds, source, run_dir, plan.stage.name)

    return StageRun(
        hardware=hardware,
        plans=plans,
        build=build,
        datasets=datasets,
        multipliers=lambda stage, partition: stage_multipliers(config, stage, partition),
        loss=loss_for(config, source.task),
        metrics=lambda: make_metrics(source.task, source.num_classes),
        monitor=monitor_for(source.task),
        run_dir=run_dir,
        restore_dir=chief_dir,
        jit_compile=resolve_jit_compile(config.train.jit_compile, hardware.kind),
        steps_per_execution=config.train.steps_per_execution,
        validation_steps=lambda plan: _validation_steps(config, inputs, plan),
        ema=config.train.ema,
        swa=config.train.swa,
        verbose=config.train.verbose,
        rebuild=rebuild,
        before_first_epoch=calibrate_bn,
        after_stage=after_stage,
        row_fields=lambda plan: {"stored_sizes": _stored_sizes(config, source, plan)},
        input_errors=lambda: read_errors_named(source),
    )


def _stored_sizes(config: Config, source: Any, plan: StagePlan) -> str:
    """Which stored images the stage's training data decodes from, e.g. "128 256 full"."""
    data = config.data
    used = stored_sizes_used(
        source, plan.stage.image_size, data.resize, cache=data.cache or None, keys=data.keys
    )
    return " ".join(used)


def _explain_stage(
    model: tf.keras.Model, val_ds: tf.data.Dataset, source: Any, run_dir: str, name: str
) -> None:
    """Grad-CAM grid of one validation batch: is the model looking at the object?"""
    from kerastricks.explain import save_grad_cam_grid

    images, labels = next(iter(val_ds))[:2]
    path = os.path.join(run_dir, "plots", f"gradcam_{name}.png")
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
    train_ds, _ = stage_datasets(config, inputs, plan, hardware)
    batches = update_bn(model, train_ds, steps=10)
    print(f"kerastricks: BatchNorm statistics calibrated on {batches} training batches")


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


def stage_datasets(
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
        repeat=True,
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
