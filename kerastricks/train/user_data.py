"""The caller's own model and datasets as `fit_stages` runs them through stages.

Datasets come fixed, or from a function of the stage's image size (and batch size); an
epoch's steps come from the arguments or from the dataset's length. A model comes built, or
from a function that `fit_stages` calls inside the strategy's scope. `fit.json` in the run
folder records the stages a run started with, so that a resume with other ones is refused.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
from collections.abc import Callable
from typing import Any

import tensorflow as tf

from kerastricks._fs import read_json, write_json_atomic
from kerastricks.config import StageConfig
from kerastricks.models import LayerGroup, layer_groups
from kerastricks.train.engine import saved_state
from kerastricks.train.stages import StagePlan, plan_from_steps

# The stages and steps a run started with, to check a resume against.
FIT_FILE = "fit.json"


class UserDatasets:
    """The caller's datasets: fixed, a function of the image size, or of size and batch."""

    def __init__(self, datasets: Any) -> None:
        self._function = None
        self._fixed = None
        self._cache: dict[tuple[Any, Any], tuple[tf.data.Dataset, Any]] = {}
        if isinstance(datasets, tf.data.Dataset) or isinstance(datasets, (tuple, list)):
            self._fixed = _pair(datasets)
        elif callable(datasets):
            self._function = datasets
        else:
            raise TypeError(
                "datasets: expected (train_ds, val_ds), a tf.data.Dataset, or a function of "
                f"the image size; received {type(datasets).__name__}"
            )
        self.takes_batch = self._function is not None and _positional_arity(datasets) >= 2
        self.fixed = self._fixed is not None

    def get(self, image_size: int | None, batch: int | None) -> tuple[tf.data.Dataset, Any]:
        """The (train, val) datasets of a size (and batch), built once per pair."""
        if self._fixed is not None:
            return self._fixed
        key = (image_size, batch if self.takes_batch else None)
        if key not in self._cache:
            args = key if self.takes_batch else key[:1]
            self._cache[key] = _pair(self._function(*args))
        return self._cache[key]

    def for_plan(self, plan: StagePlan, epochs_done: int) -> tuple[tf.data.Dataset, Any]:
        """A stage's datasets as Keras' fit takes them with `steps_per_epoch`."""
        train_ds, val_ds = self.get(plan.stage.image_size, plan.update_batch or None)
        if int(train_ds.cardinality()) == plan.steps_per_epoch:
            return train_ds, val_ds  # Keras starts a new pass every epoch
        # One stream through the stage's epochs; a resumed stage continues a deterministic
        # one where the killed run stopped.
        train_ds = train_ds.repeat()
        consumed = max(0, epochs_done - plan.first_epoch) * plan.steps_per_epoch
        if consumed and train_ds.options().deterministic is not False:
            train_ds = train_ds.skip(consumed)
        return train_ds, val_ds


def _pair(datasets: Any) -> tuple[tf.data.Dataset, Any]:
    if isinstance(datasets, tf.data.Dataset):
        return datasets, None
    if isinstance(datasets, (tuple, list)) and len(datasets) == 2:
        if isinstance(datasets[0], tf.data.Dataset):
            return datasets[0], datasets[1]
    raise TypeError(
        "datasets: expected (train_ds, val_ds) of tf.data.Dataset (val_ds may be None); "
        f"received {datasets!r}"
    )


def _positional_arity(function: Callable[..., Any]) -> int:
    parameters = inspect.signature(function).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in parameters):
        return 2
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return sum(p.kind in positional for p in parameters)


def plan_user_stages(
    stages: list[StageConfig],
    source: UserDatasets,
    replicas: int,
    batch_size: int | None,
    steps_per_epoch: int | None,
    accumulate_steps: int,
) -> list[StagePlan]:
    """Each stage's global batch and updates per epoch, from the arguments or its dataset."""
    batches, steps, planned = [], [], []
    for i, stage in enumerate(stages):
        per_replica = stage.batch_size or batch_size
        update = per_replica * replicas * accumulate_steps if per_replica else None
        if per_replica and not source.takes_batch:
            # Only a datasets function of (image_size, batch_size) can apply a batch size.
            raise ValueError(
                f"stages[{i}]: batch_size={per_replica} cannot be applied: the datasets come "
                "batched already; pass datasets(image_size, batch_size) to let each stage "
                "set its batch, or leave batch_size unset"
            )
        if source.takes_batch and update is None:
            raise ValueError(
                f"stages[{i}]: datasets takes a batch size; give fit_stages(batch_size=...) "
                "or the stage's batch_size"
            )
        train_ds, _ = source.get(stage.image_size, update)
        spec = tf.nest.flatten(train_ds.element_spec)[0]
        if source.fixed and spec.shape.rank == 4 and spec.shape[1] is not None:
            stage = dataclasses.replace(stage, image_size=int(spec.shape[1]))
        if update is None and spec.shape.rank and spec.shape[0] is not None:
            update = int(spec.shape[0])
        batches.append((update or 0) // accumulate_steps)
        steps.append(steps_per_epoch or _dataset_steps(train_ds, i, stage))
        planned.append(stage)
    return plan_from_steps(planned, batches, steps, accumulate_steps)


def _dataset_steps(train_ds: tf.data.Dataset, index: int, stage: StageConfig) -> int:
    count = int(train_ds.cardinality())
    if count > 0:
        return count
    if count == 0:
        raise ValueError(f"stages[{index}] ('{stage.name}'): the training dataset is empty")
    length = "infinite" if count == tf.data.INFINITE_CARDINALITY else "unknown"
    raise ValueError(
        f"stages[{index}] ('{stage.name}'): the training dataset's length is {length}, so an "
        "epoch has no end: pass steps_per_epoch=..., or give the dataset a known length "
        "(e.g. `dataset.apply(tf.data.experimental.assert_cardinality(batches))`)."
    )


def model_factory(
    model: Any, strategy: tf.distribute.Strategy, precision: str | None
) -> Callable[[], tf.keras.Model]:
    if not isinstance(model, tf.keras.Model):
        if not callable(model):
            raise TypeError(f"model: expected a tf.keras.Model or a function; received {model!r}")
        return _checked_factory(model)
    if precision is not None:
        raise ValueError(
            f"precision={precision!r} applies to models built after it is set: pass a function "
            "that builds the model, or set tf.keras.mixed_precision.set_global_policy first."
        )
    in_scope = all(strategy.extended.variable_created_in_scope(v) for v in model.weights[:1])
    if not in_scope:
        raise ValueError(
            f"model {model.name!r} was built outside the scope of {type(strategy).__name__}: "
            "pass a function that builds it (fit_stages calls it inside the scope), or build it "
            "under `with strategy.scope():`."
        )
    return lambda: model


def _checked_factory(factory: Callable[[], Any]) -> Callable[[], tf.keras.Model]:
    def build() -> tf.keras.Model:
        model = factory()
        if not isinstance(model, tf.keras.Model):
            raise TypeError(f"model function returned {type(model).__name__}, not a Model")
        return model

    return build


def groups_of(model: tf.keras.Model, groups: Any) -> list[LayerGroup]:
    if groups is None or isinstance(groups, int):
        return layer_groups(model, groups)
    split = []
    for i, group in enumerate(groups):
        if isinstance(group, LayerGroup):
            split.append(group)
        else:
            split.append(LayerGroup(f"group{i}", layers=list(group)))
    return split


def _fit_record(plans: list[StagePlan]) -> list[dict[str, Any]]:
    return [{**dataclasses.asdict(p.stage), "steps_per_epoch": p.steps_per_epoch} for p in plans]


def write_fit_record(run_dir: str, plans: list[StagePlan]) -> None:
    tf.io.gfile.makedirs(run_dir)
    write_json_atomic(os.path.join(run_dir, FIT_FILE), {"stages": _fit_record(plans)})


def check_fit_resume(run_dir: str, plans: list[StagePlan], resume: bool) -> None:
    """Refuses to resume a run whose started stages were other than the given ones."""
    state = saved_state(run_dir)
    if not state or not state["rows"]:
        return
    if not resume:
        raise FileExistsError(
            f"run_dir {run_dir} holds a run ({len(state['rows'])} epochs done): resume it "
            "with resume=True, or pick another run_dir."
        )
    path = os.path.join(run_dir, FIT_FILE)
    saved = read_json(path)["stages"] if tf.io.gfile.exists(path) else []
    given = _fit_record(plans)
    done = len(state["rows"])
    for i, plan in enumerate(plans):
        if plan.first_epoch >= done:
            break
        before = saved[i] if i < len(saved) else None
        changed = [k for k in given[i] if before is None or before.get(k) != given[i][k]]
        # The stage in progress may grow; everything else it trained with stays.
        if plan.last_epoch > done and changed == ["epochs"] and given[i]["epochs"] > done:
            continue
        if changed:
            raise ValueError(
                f"stages[{i}] ('{plan.stage.name}') of {run_dir} was trained with "
                f"{ {k: (before or {}).get(k) for k in changed} }, the resumed call gives "
                f"{ {k: given[i][k] for k in changed} }. Only stages not started may change: "
                "keep them, or pick another run_dir."
            )
