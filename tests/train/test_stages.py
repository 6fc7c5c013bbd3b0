"""Recipes expand into the stages fastai and the seeds describe; plans count steps right."""

import pytest

import kerastricks  # noqa: F401
from kerastricks.config import RecipeConfig, StageConfig, TrainConfig
from kerastricks.train.stages import (
    fine_tune_stages,
    plan_stages,
    progressive_stages,
    resolve_stages,
    trainable_groups,
)


def test_fine_tune_matches_fastai_defaults():
    frozen, unfrozen = fine_tune_stages(epochs=3, image_size=64)
    assert (frozen.epochs, frozen.unfreeze, frozen.lr) == (1, "head", 2e-3)
    assert frozen.schedule_kwargs == {"pct_start": 0.99}
    assert (unfrozen.epochs, unfrozen.unfreeze) == (3, "all")
    assert unfrozen.lr == pytest.approx(1e-3)
    assert unfrozen.lr_mult == {"slice": [pytest.approx(1e-5), pytest.approx(1e-3)]}
    assert unfrozen.schedule_kwargs == {"pct_start": 0.3, "div": 5.0}
    assert frozen.schedule == unfrozen.schedule == "one_cycle_fastai"


def test_progressive_sizes_grow_and_epochs_add_up():
    stages = progressive_stages(epochs=7, image_size=64, fractions=[0.5, 0.75, 1.0], lr=1e-3)
    assert [s.image_size for s in stages] == [32, 48, 64]
    assert [s.epochs for s in stages] == [2, 2, 3]
    assert all(s.unfreeze == "all" for s in stages)


def test_progressive_refuses_fewer_epochs_than_stages():
    with pytest.raises(ValueError, match="train.recipe.epochs=2"):
        progressive_stages(epochs=2, image_size=64, fractions=[0.5, 0.75, 1.0], lr=1e-3)


def test_recipe_replaces_stages_and_names_them():
    train = TrainConfig(recipe=RecipeConfig(name="progressive", epochs=3, image_size=32))
    stages = resolve_stages(train)
    assert [s.image_size for s in stages] == [16, 24, 32]
    unnamed = resolve_stages(TrainConfig(stages=[StageConfig(), StageConfig()]))
    assert [s.name for s in unnamed] == ["stage1", "stage2"]


@pytest.mark.parametrize(
    "stage, message",
    [
        (StageConfig(epochs=0), "train.stages.0.epochs"),
        (StageConfig(unfreeze="backbone"), "train.stages.0.unfreeze"),
        (StageConfig(lr=-1.0), "train.stages.0.lr"),
    ],
)
def test_bad_stage_values_name_the_key(stage, message):
    with pytest.raises(ValueError, match=message):
        resolve_stages(TrainConfig(stages=[stage]))


def test_plan_counts_steps_and_offsets():
    stages = [StageConfig(epochs=2, batch_size=32), StageConfig(epochs=3)]
    plans = plan_stages(stages, num_train=1000, batch_size=64, replicas=2)
    assert [p.global_batch for p in plans] == [64, 128]
    assert [p.steps_per_epoch for p in plans] == [15, 7]
    assert [p.first_epoch for p in plans] == [0, 2]
    assert [p.first_step for p in plans] == [0, 30]
    assert plans[1].last_epoch == 5
    capped = plan_stages(stages, num_train=1000, batch_size=64, replicas=1, steps_cap=4)
    assert [p.steps_per_epoch for p in capped] == [4, 4]


def test_plan_refuses_a_batch_larger_than_the_data():
    with pytest.raises(ValueError, match="lower train.batch_size"):
        plan_stages([StageConfig()], num_train=10, batch_size=64, replicas=1)


def test_trainable_groups():
    assert trainable_groups("head", 5) == 1
    assert trainable_groups("all", 5) == 5
    assert trainable_groups(3, 5) == 3
    assert trainable_groups(9, 5) == 5
