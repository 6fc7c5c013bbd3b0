"""`kerastricks lr-find`: the LR range test on what a config's stage trains."""

from __future__ import annotations

import os
from typing import Any

import tensorflow as tf

from kerastricks.config import Config
from kerastricks.train.preflight import check_pretrained_weights, preflight
from kerastricks.train.stages import pick_stage


def lr_find_for_config(
    config: Config, out: str | None, steps: int = 100, stage: int = 0
) -> tuple[Any, str]:
    """Runs the LR range test on what the stage at `stage` trains: the runner's model,
    optimizer (its LR multipliers, EMA, accumulation), freezing, loss, precision, strategy and
    training data. Returns (finder, plot path)."""
    from kerastricks.callbacks import find_lr
    from kerastricks.losses import make_metrics
    from kerastricks.train.build import build_parts, stage_multipliers
    from kerastricks.train.engine import enter_stage
    from kerastricks.train.runner import loss_for, stage_datasets
    from kerastricks.train.stages import plan_stages
    from kerastricks.train.strategy import detect_hardware, resolve_precision

    hardware = detect_hardware(config.train.strategy)
    inputs = preflight(config)
    chosen = pick_stage(inputs.stages, stage)
    check_pretrained_weights(config)
    train = config.train
    (plan,) = plan_stages(
        [chosen],
        inputs.num_train,
        train.batch_size,
        hardware.replicas,
        steps,
        train.accumulate_steps,
    )
    tf.keras.mixed_precision.set_global_policy(resolve_precision(train.precision, hardware.kind))
    tf.keras.utils.set_random_seed(config.seed)
    try:
        _progress(f"building {config.model.backbone} at {chosen.image_size}px")
        with hardware.strategy.scope():
            # The finder sweeps a constant LR; the stage's multipliers still scale each group.
            parts = build_parts(config, [plan], inputs.source.num_classes, 1.0, learning_rate=1e-7)
        enter_stage(parts, chosen, stage_multipliers(config, chosen, parts.partition))
        with hardware.strategy.scope():
            parts.model.compile(
                optimizer=parts.optimizer,
                loss=loss_for(config, inputs.source.task),
                metrics=make_metrics(inputs.source.task, inputs.source.num_classes),
            )
        dataset, _ = stage_datasets(config, inputs, plan, hardware)
        # The first batch traces the graph (tens of seconds); Keras' progress bar then counts
        # the sweep's batches.
        _progress(f"sweeping the LR over {steps} batches (the first one traces the graph)")
        finder = find_lr(parts.model, dataset, steps=steps, verbose=1)
    finally:
        tf.keras.mixed_precision.set_global_policy("float32")
    path = out or os.path.join(config.output, config.name, "plots", "lr_find.png")
    finder.plot(path)
    return finder, path


def _progress(message: str) -> None:
    print(f"kerastricks: {message}", flush=True)
