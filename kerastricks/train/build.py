"""Builds what a run trains: the classifier, its layer groups, the optimizer and the schedule.

Everything here is created inside the strategy's scope by the caller.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import tensorflow as tf

from kerastricks.callbacks import enable_ema
from kerastricks.config import Config, StageConfig
from kerastricks.models import build_classifier, create_backbone, layer_groups
from kerastricks.models.layer_decay import LRPartition, lr_partition
from kerastricks.optim import (
    accumulate_gradients,
    create_optimizer,
    with_lr_multipliers,
)
from kerastricks.schedules import Staged, get_schedule
from kerastricks.train.stages import StagePlan


@dataclass
class TrainingParts:
    """The model, its groups, the optimizer and the run-wide LR schedule.

    Args:
        model: the classifier (raw pixels in, float32 logits out).
        groups: ordered layer groups, input side first, head last.
        optimizer: the optimizer with per-group LR multipliers.
        schedule: the run-wide schedule (one stage after another, by global step).
        partition: the optimizer's LR variable lists (layer groups split by timm depth).
    """

    model: tf.keras.Model
    groups: list[Any]
    optimizer: Any
    schedule: Any
    partition: LRPartition | None = None


def build_model(config: Config, num_outputs: int, image_size: int) -> tf.keras.Model:
    """The tfimm backbone with a new head whose input size is inferred from the backbone."""
    backbone = create_backbone(
        config.model.backbone,
        weights=config.model.weights,
        input_size=image_size,
        **config.model.kwargs,
    )
    return build_classifier(backbone, num_outputs, head=config.model.head)


def stage_schedule(stage: StageConfig, total_steps: int, lr_scale: float = 1.0) -> Any:
    """The LR schedule of one stage (peak `stage.lr`), by name from the registry.

    `constant` runs at `lr`; `cyclical` cycles between `lr / div` (default 4) and `lr` with
    `cycles` (default 2) triangular cycles over the stage, unless its own arguments are given.
    """
    peak = stage.lr * lr_scale
    kwargs = dict(stage.schedule_kwargs)
    if stage.schedule == "constant":
        return get_schedule("constant", lr=peak, **kwargs)
    if stage.schedule == "cyclical":
        cycles = kwargs.pop("cycles", 2)
        kwargs.setdefault("initial_learning_rate", peak / kwargs.pop("div", 4.0))
        kwargs.setdefault("maximal_learning_rate", peak)
        kwargs.setdefault("step_size", max(total_steps / (2 * cycles), 1))
        return get_schedule("cyclical", **kwargs)
    return get_schedule(stage.schedule, max_lr=peak, total_steps=max(total_steps, 1), **kwargs)


def run_schedule(plans: list[StagePlan], lr_scale: float = 1.0) -> Staged:
    """One schedule for the whole run, so that a resumed run finds its place from the
    optimizer's step counter alone."""
    schedules = [stage_schedule(p.stage, p.total_steps, lr_scale) for p in plans]
    boundaries = [p.first_step + p.total_steps for p in plans[:-1]]
    return Staged(boundaries, schedules)


def stage_multipliers(config: Config, stage: StageConfig, partition: LRPartition) -> list[float]:
    """LR multipliers of a stage (head = 1.0), from the stage or `train.lr_mult`."""
    return spread_multipliers(
        stage.lr_mult if stage.lr_mult is not None else config.train.lr_mult, partition
    )


def spread_multipliers(spec: Any, partition: LRPartition) -> list[float]:
    """LR multipliers from a `lr_mult` spec, one per list of `partition`: `slice` and lists
    per layer group, `layer_decay` per timm depth (docs/layer_groups.md); None: all 1.0."""
    return partition.multipliers(spec)


def build_parts(
    config: Config,
    plans: list[StagePlan],
    num_outputs: int,
    lr_scale: float,
    image_size: int | None = None,
    learning_rate: float | None = None,
) -> TrainingParts:
    """Creates model, groups, optimizer (built on every variable that may ever train, so that
    unfreezing later keeps the slots) and schedule; the model at `image_size` (default: the
    first stage's), which matters for fixed-size (transformer) backbones only.
    `learning_rate`: a constant LR instead of the schedule (the LR finder sweeps it)."""
    model = build_model(config, num_outputs, image_size or plans[0].stage.image_size)
    groups = layer_groups(model, config.train.groups)
    partition = lr_partition(model, groups)
    optimizer = config.train.optimizer
    return training_parts(
        model,
        groups,
        plans,
        optimizer=optimizer.name,
        weight_decay=optimizer.weight_decay,
        optimizer_kwargs=optimizer.kwargs,
        multipliers=stage_multipliers(config, plans[0].stage, partition),
        partition=partition,
        ema=config.train.ema,
        accumulate_steps=config.train.accumulate_steps,
        lr_scale=lr_scale,
        learning_rate=learning_rate,
    )


def training_parts(
    model: tf.keras.Model,
    groups: list[Any],
    plans: list[StagePlan],
    *,
    optimizer: str = "adamw",
    weight_decay: float = 0.05,
    optimizer_kwargs: dict[str, Any] | None = None,
    multipliers: list[float] | None = None,
    partition: LRPartition | None = None,
    ema: float | None = None,
    accumulate_steps: int = 1,
    lr_scale: float = 1.0,
    learning_rate: float | None = None,
) -> TrainingParts:
    """The optimizer (with per-group LR multipliers, the first stage's at first) and the
    run-wide schedule for a model already split into `groups`; the optimizer is built on
    every trainable variable, so that unfreezing later keeps the slots. `learning_rate`: a
    constant LR (settable, as the LR finder needs) instead of the schedule."""
    schedule = run_schedule(plans, lr_scale)
    created = create_optimizer(
        optimizer,
        learning_rate=schedule if learning_rate is None else learning_rate,
        weight_decay=weight_decay,
        model=model,
        **(optimizer_kwargs or {}),
    )
    partition = partition or lr_partition(model, groups)
    multipliers = multipliers or partition.multipliers(None)
    created = with_lr_multipliers(created, partition.variables, multipliers)
    if ema is not None:
        enable_ema(created, ema)
    created.build([v for v in model.weights if v.trainable])
    if accumulate_steps > 1:
        accumulate_gradients(model, accumulate_steps)
    return TrainingParts(model, groups, created, schedule, partition)
