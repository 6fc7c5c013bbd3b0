"""Stages of a run: recipes expanded into explicit stages, and each stage's step plan.

Recipes are compositions of plain stages (fastai's habit): `fine_tune` is a frozen one-cycle
stage followed by an unfrozen one with discriminative LRs; `progressive` is the same model
trained at growing image sizes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from kerastricks.config import RecipeConfig, StageConfig, TrainConfig
from kerastricks.config.names import RECIPES
from kerastricks.config.validate import ConfigError, check_choice, check_stage

SIZE_MULTIPLE = 8


def expand_recipe(recipe: RecipeConfig) -> list[StageConfig]:
    """Expands a named recipe into explicit stages."""
    if recipe.name == "fine_tune":
        return fine_tune_stages(
            recipe.epochs, recipe.image_size, recipe.base_lr, recipe.freeze_epochs, recipe.lr_mult
        )
    if recipe.name == "progressive":
        return progressive_stages(recipe.epochs, recipe.image_size, recipe.fractions, recipe.lr)
    check_choice("train.recipe.name", recipe.name, RECIPES)
    raise AssertionError(f"recipe {recipe.name!r} is in RECIPES but has no expansion")


def fine_tune_stages(
    epochs: int,
    image_size: int,
    base_lr: float = 2e-3,
    freeze_epochs: int = 1,
    lr_mult: float = 100.0,
) -> list[StageConfig]:
    """fastai `fine_tune`: one-cycle with the backbone frozen (pct_start=0.99), then base_lr/2,
    unfreeze, one-cycle over slice(base_lr/2/lr_mult, base_lr/2) with pct_start=0.3, div=5."""
    frozen = StageConfig(
        epochs=freeze_epochs,
        image_size=image_size,
        unfreeze="head",
        lr=base_lr,
        schedule="one_cycle_fastai",
        schedule_kwargs={"pct_start": 0.99},
        name="frozen",
    )
    half = base_lr / 2
    unfrozen = StageConfig(
        epochs=epochs,
        image_size=image_size,
        unfreeze="all",
        lr=half,
        schedule="one_cycle_fastai",
        schedule_kwargs={"pct_start": 0.3, "div": 5.0},
        lr_mult={"slice": [half / lr_mult, half]},
        name="unfrozen",
    )
    return [frozen, unfrozen]


def progressive_stages(
    epochs: int, image_size: int, fractions: list[float], lr: float
) -> list[StageConfig]:
    """Progressive resizing: one stage per fraction of the final size, epochs split evenly."""
    if not fractions or any(not 0 < f <= 1 for f in fractions):
        raise ValueError(f"train.recipe.fractions: expected values in (0, 1], got {fractions}")
    if epochs < len(fractions):
        raise ValueError(
            f"train.recipe.epochs={epochs} is fewer than the {len(fractions)} stages of "
            "train.recipe.fractions; give at least one epoch per stage"
        )
    per_stage = [epochs // len(fractions)] * len(fractions)
    per_stage[-1] += epochs - sum(per_stage)
    stages = []
    for i, (fraction, stage_epochs) in enumerate(zip(fractions, per_stage, strict=True)):
        size = max(SIZE_MULTIPLE, round(image_size * fraction / SIZE_MULTIPLE) * SIZE_MULTIPLE)
        stages.append(
            StageConfig(
                epochs=stage_epochs,
                image_size=size,
                unfreeze="all",
                lr=lr,
                schedule="one_cycle",
                name=f"size{size}" if i < len(fractions) - 1 else f"final{size}",
            )
        )
    return stages


def resolve_stages(train: TrainConfig) -> list[StageConfig]:
    """The explicit stages of a run: the recipe's when one is set, else `train.stages`."""
    stages = expand_recipe(train.recipe) if train.recipe is not None else train.stages
    if not stages:
        raise ValueError("train.stages is empty: give at least one stage, or a train.recipe")
    resolved = []
    for i, stage in enumerate(stages):
        check_stage(stage, f"train.stages.{i}")
        name = stage.name or f"stage{i + 1}"
        resolved.append(dataclasses.replace(stage, name=name))
    return resolved


def pick_stage(stages: Sequence[StageConfig], index: int) -> StageConfig:
    """The stage at `index` (negative counts from the end); a ConfigError names the range."""
    if not -len(stages) <= index < len(stages):
        names = ", ".join(f"{i}: {stage.name}" for i, stage in enumerate(stages))
        raise ConfigError(
            f"--stage {index}: the config has {len(stages)} stage(s) ({names}); give an index "
            f"from 0 to {len(stages) - 1}, or -1 for the last"
        )
    return stages[index]


@dataclass
class StagePlan:
    """A stage with its batch and step counts, as the trainer runs it.

    Args:
        index: position of the stage in the run.
        stage: the stage's config.
        global_batch: per-replica batch x replicas (one micro-batch when accumulating).
        steps_per_epoch: optimizer updates per epoch.
        first_epoch: the run-wide index of the stage's first epoch.
        first_step: the run-wide index of the stage's first optimizer step.
    """

    index: int
    stage: StageConfig
    global_batch: int
    steps_per_epoch: int
    first_epoch: int
    first_step: int
    accumulate_steps: int = 1

    @property
    def update_batch(self) -> int:
        """Samples per optimizer update: the global batch x accumulation steps."""
        return self.global_batch * self.accumulate_steps

    @property
    def last_epoch(self) -> int:
        """Run-wide epoch count when the stage ends (Keras `epochs=`)."""
        return self.first_epoch + self.stage.epochs

    @property
    def total_steps(self) -> int:
        """Optimizer steps in the stage."""
        return self.stage.epochs * self.steps_per_epoch


def plan_stages(
    stages: list[StageConfig],
    num_train: int,
    batch_size: int,
    replicas: int,
    steps_cap: int | None = None,
    accumulate_steps: int = 1,
) -> list[StagePlan]:
    """Computes each stage's global batch, updates per epoch and run-wide offsets."""
    batches, steps = [], []
    for i, stage in enumerate(stages):
        global_batch = (stage.batch_size or batch_size) * replicas
        count = num_train // (global_batch * accumulate_steps)
        if count < 1:
            raise ValueError(
                f"train.stages.{i}: one update needs {global_batch * accumulate_steps} "
                f"samples but the training folds hold {num_train}; lower train.batch_size "
                "or train.accumulate_steps"
            )
        batches.append(global_batch)
        steps.append(count if steps_cap is None else min(count, steps_cap))
    return plan_from_steps(stages, batches, steps, accumulate_steps)


def plan_from_steps(
    stages: Sequence[StageConfig],
    global_batches: Sequence[int],
    steps_per_epoch: Sequence[int],
    accumulate_steps: int = 1,
) -> list[StagePlan]:
    """Plans with known global batches and updates per epoch: the run-wide offsets."""
    plans = []
    epoch = 0
    step = 0
    for i, (stage, batch, steps) in enumerate(
        zip(stages, global_batches, steps_per_epoch, strict=True)
    ):
        plans.append(StagePlan(i, stage, batch, steps, epoch, step, accumulate_steps))
        epoch += stage.epochs
        step += stage.epochs * steps
    return plans


def trainable_groups(unfreeze: str | int, num_groups: int) -> int:
    """How many groups, counted from the head, train under a stage's `unfreeze`."""
    if unfreeze == "all":
        return num_groups
    if unfreeze == "head":
        return 1
    return min(int(unfreeze), num_groups)
