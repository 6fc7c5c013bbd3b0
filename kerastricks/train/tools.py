"""Config-driven helpers behind the CLI verbs `show-batch` and `lr-find`."""

from __future__ import annotations

import os
from typing import Any

import tensorflow as tf

from kerastricks.config import Config
from kerastricks.train.preflight import check_pretrained_weights, fold_counts, preflight
from kerastricks.train.stages import pick_stage


def show_batch_for_config(config: Config, out: str, stage: int = -1) -> str:
    """Writes a PNG grid of one augmented training batch at a stage's image size."""
    from kerastricks.data import show_batch

    inputs = preflight(config)
    chosen = pick_stage(inputs.stages, stage)
    train_folds = [f for f in fold_counts(inputs.source) if f != config.data.val_fold]
    show_batch(
        inputs.source,
        image_size=chosen.image_size,
        augment=config.augment or None,
        path=out,
        batch_size=chosen.batch_size or config.train.batch_size,
        seed=config.seed,
        folds=train_folds if -1 not in train_folds else None,
        resize=config.data.resize,
        keys=config.data.keys,
        num_classes=inputs.source.num_classes,
    )
    return out


def lr_find_for_config(
    config: Config, out: str | None, steps: int = 100, stage: int = 0
) -> tuple[Any, str]:
    """Runs the LR range test on the config's model and data; returns (finder, plot path)."""
    from kerastricks.callbacks import find_lr
    from kerastricks.data import build_dataset
    from kerastricks.losses import make_metrics
    from kerastricks.models import layer_groups, set_trainable
    from kerastricks.optim import create_optimizer
    from kerastricks.train.build import build_model
    from kerastricks.train.runner import loss_for
    from kerastricks.train.stages import trainable_groups

    inputs = preflight(config)
    chosen = pick_stage(inputs.stages, stage)
    check_pretrained_weights(config)
    tf.keras.utils.set_random_seed(config.seed)
    _progress(f"building {config.model.backbone} at {chosen.image_size}px")
    model = build_model(config, inputs.source.num_classes, chosen.image_size)
    groups = layer_groups(model, config.train.groups)
    set_trainable(model, groups, trainable_groups(chosen.unfreeze, len(groups)))
    optimizer = create_optimizer(
        config.train.optimizer.name,
        learning_rate=1e-7,
        weight_decay=config.train.optimizer.weight_decay,
        model=model,
        **config.train.optimizer.kwargs,
    )
    model.compile(
        optimizer=optimizer,
        loss=loss_for(config, inputs.source.task),
        metrics=make_metrics(inputs.source.task, inputs.source.num_classes),
    )
    dataset = build_dataset(
        inputs.source,
        image_size=chosen.image_size,
        batch_size=chosen.batch_size or config.train.batch_size,
        training=True,
        repeat=True,
        augment=config.augment or None,
        seed=config.seed,
        exclude_folds=[config.data.val_fold],
        resize=config.data.resize,
        num_classes=inputs.source.num_classes,
    )
    # The first batch traces the graph (tens of seconds); Keras' progress bar then counts
    # the sweep's batches.
    _progress(f"sweeping the LR over {steps} batches (the first one traces the graph)")
    finder = find_lr(model, dataset, steps=steps, verbose=1)
    path = out or os.path.join(config.output, config.name, "plots", "lr_find.png")
    finder.plot(path)
    return finder, path


def _progress(message: str) -> None:
    print(f"kerastricks: {message}", flush=True)
