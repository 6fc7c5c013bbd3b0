"""`kerastricks show-batch`: one augmented training batch of a config, as a PNG grid."""

from __future__ import annotations

from kerastricks.config import Config
from kerastricks.train.preflight import preflight
from kerastricks.train.stages import pick_stage


def show_batch_for_config(config: Config, out: str, stage: int = -1) -> str:
    """Writes a PNG grid of one augmented training batch at a stage's image size."""
    from kerastricks.data import show_batch

    inputs = preflight(config)
    chosen = pick_stage(inputs.stages, stage)
    train_folds = [f for f in inputs.source.fold_counts() if f != config.data.val_fold]
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
