"""Range and name checks of every config value, run when a config is loaded.

`validate` is the one place a value's range or a name is checked: `from_dict` and
`load_config` call it, so a bad value stops a run before any folder is written, model built
or fold trained. It imports no TensorFlow; the checks that need it (backbone, augmentation,
optimizer and schedule names, files that must exist) are `kerastricks.train.preflight`'s.
Each error names the key path, the value received and what is expected.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Sequence
from typing import Any, Literal, Union

from kerastricks.config.names import check_tta_transform
from kerastricks.config.schema import (
    Config,
    DataConfig,
    HeadConfig,
    ModelConfig,
    PseudoConfig,
    RecipeConfig,
    StageConfig,
    TrainConfig,
)

MIN_IMAGE_SIZE = 8


class ConfigError(ValueError):
    """A configuration problem, with the key path, the value and what to do."""


def validate(config: Config) -> None:
    """Checks the range of every value and every name that needs no TensorFlow.

    Raises:
        ConfigError: naming the first bad key, its value and what is expected.
    """
    check_choices(config, "")
    for path in ("name", "output"):
        _non_empty(path, getattr(config, path))
    at_least("seed", config.seed, 0)
    _check_data(config.data)
    _check_model(config.model)
    for i, entry in enumerate(config.augment):
        _check_augment(f"augment.{i}", entry)
    _check_train(config.train)
    folds = config.cv.folds
    if folds is not None and (not folds or len(set(folds)) < len(folds) or min(folds) < 0):
        raise ConfigError(
            f"cv.folds: expected a non-empty list of unique fold numbers >= 0 (or null for "
            f"every fold), got {folds!r}"
        )
    for i, name in enumerate(config.tta.transforms):
        try:
            check_tta_transform(name)
        except ValueError as error:
            raise ConfigError(f"tta.transforms.{i}: {error}") from None
    in_range("tta.beta", config.tta.beta, 0.0, 1.0)
    _non_empty("predict.id_column", config.predict.id_column)
    _non_empty("predict.target_column", config.predict.target_column)
    _check_pseudo(config.pseudo)


def check_stage(stage: StageConfig, path: str) -> None:
    """Checks one stage's values; `path` is its key path, e.g. `train.stages.0`."""
    at_least(f"{path}.epochs", stage.epochs, 1)
    at_least(f"{path}.image_size", stage.image_size, MIN_IMAGE_SIZE, unit=" px")
    _positive(f"{path}.lr", stage.lr)
    check_choices(stage, path)
    unfreeze = stage.unfreeze
    if isinstance(unfreeze, int) and unfreeze < 1:
        raise ConfigError(
            f"{path}.unfreeze: expected 'head', 'all' or a number of groups >= 1, got {unfreeze!r}"
        )
    _check_lr_mult(f"{path}.lr_mult", stage.lr_mult)
    at_least(f"{path}.batch_size", stage.batch_size, 1)


def check_choices(section: Any, path: str) -> None:
    """Checks every key of a config section (and the sections in it) whose schema type is a
    `Literal[...]` of names: its value must be one of them (or null, an int, ... where the
    type allows that too)."""
    hints = typing.get_type_hints(type(section))
    for item in dataclasses.fields(section):
        value = getattr(section, item.name)
        full = f"{path}.{item.name}" if path else item.name
        values = value if isinstance(value, list) else [value]
        for index, entry in enumerate(values):
            if dataclasses.is_dataclass(entry):
                check_choices(entry, f"{full}.{index}" if isinstance(value, list) else full)
        choices, others = _literal_choices(hints[item.name])
        if choices and not _is_one_of(value, others):
            check_choice(full, value, choices)


def _literal_choices(hint: Any) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """The names of a `Literal[...]` type (alone or in a union) and the union's other types."""
    options = typing.get_args(hint) if typing.get_origin(hint) in (Union, types.UnionType) else ()
    options = options or (hint,)
    literals = [o for o in options if typing.get_origin(o) is Literal]
    others = tuple(o for o in options if typing.get_origin(o) is not Literal)
    return (typing.get_args(literals[0]) if literals else ()), others


def _is_one_of(value: Any, types_: tuple[Any, ...]) -> bool:
    if value is None:
        return type(None) in types_
    plain = tuple(t for t in types_ if isinstance(t, type) and t is not type(None))
    return isinstance(value, plain) and not isinstance(value, (bool, str))


def check_choice(path: str, value: Any, choices: Sequence[str]) -> None:
    """Raises a ConfigError with the closest choice when `value` is not one of `choices`."""
    if value in choices:
        return
    close = difflib.get_close_matches(str(value), list(choices), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ConfigError(f"{path}: unknown value {value!r}{hint} Choose one of {list(choices)}")


def at_least(path: str, value: int | float | None, low: int | float, unit: str = "") -> None:
    """Raises a ConfigError unless `value` is null or >= `low` (NaN fails)."""
    if value is not None and not value >= low:
        raise ConfigError(f"{path}: expected >= {low}{unit}, got {value!r}")


def in_range(
    path: str,
    value: float | None,
    low: float,
    high: float,
    *,
    open_low: bool = False,
    open_high: bool = False,
) -> None:
    """Raises a ConfigError unless `value` is null or in the interval (brackets as given)."""
    if value is None:
        return
    above = value > low if open_low else value >= low
    below = value < high if open_high else value <= high
    if not (above and below):
        interval = f"{'(' if open_low else '['}{low:g}, {high:g}{')' if open_high else ']'}"
        raise ConfigError(f"{path}: expected a value in {interval}, got {value!r}")


def _positive(path: str, value: float | None) -> None:
    if value is not None and not (value > 0 and math.isfinite(value)):
        raise ConfigError(f"{path}: expected a number > 0, got {value!r}")


def _non_empty(path: str, value: str | None) -> None:
    if value is not None and not value.strip():
        raise ConfigError(f"{path}: expected a non-empty string, got {value!r}")


def _check_data(data: DataConfig) -> None:
    for path in ("records", "extra_records", "unlabeled", "test"):
        _non_empty(f"data.{path}", getattr(data, path))
    at_least("data.num_classes", data.num_classes, 1)
    at_least("data.val_fold", data.val_fold, 0)
    if isinstance(data.cache, str):
        _non_empty("data.cache", data.cache)


def _check_model(model: ModelConfig) -> None:
    _non_empty("model.backbone", model.backbone)
    _non_empty("model.weights", model.weights)
    check_head(model.head, "model.head")


def check_head(head: HeadConfig, path: str) -> None:
    """Checks a head's values (its choices too: `build_classifier` takes one from code)."""
    check_choices(head, path)
    in_range(f"{path}.dropout", head.dropout, 0.0, 1.0, open_high=True)
    at_least(f"{path}.hidden", head.hidden, 1)
    _non_empty(f"{path}.hidden_activation", head.hidden_activation)


def _check_augment(path: str, entry: dict[str, Any]) -> None:
    if not isinstance(entry.get("name"), str) or not entry["name"].strip():
        raise ConfigError(
            f"{path}: expected a mapping with a 'name' key (e.g. {{name: RandomFlip}}), "
            f"got {entry!r}"
        )
    probability = entry.get("p", 1.0)
    if isinstance(probability, bool) or not isinstance(probability, (int, float)):
        raise ConfigError(f"{path}.p: expected a number in [0, 1], got {probability!r}")
    in_range(f"{path}.p", probability, 0.0, 1.0)


def _check_train(train: TrainConfig) -> None:
    # A zero count would surface as a ZeroDivisionError or a TF shape error mid-run; the
    # optional ones (null: not set) are checked only when set.
    counts = ("batch_size", "steps_per_execution", "accumulate_steps", "groups")
    for key in (*counts, "steps_per_epoch", "validation_steps"):
        at_least(f"train.{key}", getattr(train, key), 1)
    _non_empty("train.optimizer.name", train.optimizer.name)
    weight_decay = train.optimizer.weight_decay
    if not (weight_decay >= 0 and math.isfinite(weight_decay)):
        raise ConfigError(f"train.optimizer.weight_decay: expected >= 0, got {weight_decay!r}")
    in_range("train.label_smoothing", train.label_smoothing, 0.0, 1.0, open_high=True)
    at_least("train.focal_gamma", train.focal_gamma, 0.0)
    in_range("train.focal_alpha", train.focal_alpha, 0.0, 1.0)
    _check_lr_mult("train.lr_mult", train.lr_mult)
    if train.recipe is None and not train.stages:
        raise ConfigError(
            f"train.stages: expected at least one stage (or a train.recipe), got {train.stages}"
        )
    for i, stage in enumerate(train.stages):
        check_stage(stage, f"train.stages.{i}")
    if train.recipe is not None:
        _check_recipe(train.recipe)
    if train.jit_compile not in ("auto", True, False):
        raise ConfigError(
            f"train.jit_compile: expected 'auto', true or false, got {train.jit_compile!r}"
        )
    if train.verbose not in (0, 1, 2):
        raise ConfigError(f"train.verbose: expected 0, 1 or 2, got {train.verbose!r}")
    _check_averaging(train)


def _check_averaging(train: TrainConfig) -> None:
    if train.ema is not None and train.swa is not None:
        raise ConfigError(
            f"train.ema and train.swa: pick one weight-averaging method, got "
            f"ema={train.ema!r} and swa={train.swa!r}"
        )
    in_range("train.ema", train.ema, 0.0, 1.0, open_low=True, open_high=True)
    swa = train.swa
    # Lightning's swa_epoch_start: an int is a 1-based epoch, a float a fraction of the run.
    if swa is not None and not (swa >= 1 if isinstance(swa, int) else 0 < swa < 1):
        raise ConfigError(
            f"train.swa: expected an epoch (an int >= 1) or a fraction of the run in (0, 1), "
            f"got {swa!r}"
        )


def _check_recipe(recipe: RecipeConfig) -> None:
    at_least("train.recipe.epochs", recipe.epochs, 1)
    at_least("train.recipe.image_size", recipe.image_size, MIN_IMAGE_SIZE, unit=" px")
    at_least("train.recipe.freeze_epochs", recipe.freeze_epochs, 1)
    _positive("train.recipe.base_lr", recipe.base_lr)
    # fastai's slice(base_lr/2/lr_mult, base_lr/2) needs lo <= hi.
    at_least("train.recipe.lr_mult", recipe.lr_mult, 1.0)
    _positive("train.recipe.lr", recipe.lr)
    fractions = recipe.fractions
    if not fractions or any(not 0 < f <= 1 for f in fractions):
        raise ConfigError(f"train.recipe.fractions: expected values in (0, 1], got {fractions}")
    if recipe.name == "progressive" and recipe.epochs < len(fractions):
        raise ConfigError(
            f"train.recipe.epochs: expected at least one epoch per stage of "
            f"train.recipe.fractions ({len(fractions)}), got {recipe.epochs}"
        )


def _check_lr_mult(path: str, spec: dict[str, Any] | list[float] | None) -> None:
    # The spec's shape; whether a list matches the model's layer groups is known only once the
    # model is built (kerastricks.optim.spread_lrs).
    if spec is None:
        return
    if isinstance(spec, list):
        if not spec or any(not (v >= 0 and math.isfinite(v)) for v in spec):
            raise ConfigError(f"{path}: expected a non-empty list of multipliers >= 0, got {spec}")
        return
    if len(spec) != 1 or next(iter(spec)) not in ("slice", "layer_decay"):
        raise ConfigError(
            f"{path}: expected exactly one key, 'slice' or 'layer_decay', got {spec!r}"
        )
    if "layer_decay" in spec:
        _positive_number(f"{path}.layer_decay", spec["layer_decay"])
        return
    bounds = spec["slice"]
    if not isinstance(bounds, list) or len(bounds) not in (1, 2):
        raise ConfigError(f"{path}.slice: expected [hi] or [lo, hi], got {bounds!r}")
    for i, bound in enumerate(bounds):
        _positive_number(f"{path}.slice.{i}", bound)
    if len(bounds) == 2 and bounds[0] > bounds[1]:
        raise ConfigError(f"{path}.slice: expected lo <= hi, got {bounds!r}")


def _positive_number(path: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{path}: expected a number > 0, got {value!r}")
    _positive(path, value)


def _check_pseudo(pseudo: PseudoConfig) -> None:
    at_least("pseudo.rounds", pseudo.rounds, 0)
    in_range("pseudo.threshold", pseudo.threshold, 0.0, 1.0, open_low=True)
    if pseudo.threshold is not None and pseudo.top_k is not None:
        raise ConfigError(
            f"pseudo.threshold ({pseudo.threshold}) and pseudo.top_k ({pseudo.top_k}): give "
            "one selection rule, not both (set the other to null)"
        )
    at_least("pseudo.top_k", pseudo.top_k, 1)
    _positive("pseudo.weight", pseudo.weight)
