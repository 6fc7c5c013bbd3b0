"""Checks a run's inputs before any heavy work: records, folds, names, stages.

Value ranges and the names that need no TensorFlow are `kerastricks.config.validate`'s (run
again here for configs built in Python); this adds what needs TensorFlow or the records:
backbone, augmentation, optimizer and schedule names, and files that must exist. Paths go
through `tf.io.gfile`, so `gs://` (and `ram://`) records and weights are checked like local
ones.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from typing import Any

import tensorflow as tf

from kerastricks.config import Config, ConfigError, StageConfig
from kerastricks.config.validate import check_choice, validate
from kerastricks.datasets import PREPARERS
from kerastricks.train.stages import resolve_stages


@dataclass
class RunInputs:
    """What preflight resolved: the record source, the explicit stages and the split sizes.

    Args:
        source: the resolved records (`kerastricks.data.RecordSource`).
        stages: the run's explicit stages (recipes expanded).
        num_train: labelled records in the training folds (they set the steps per epoch;
            extra records are mixed in by proportion and do not add steps).
        num_val: records in the validation fold.
    """

    source: Any
    stages: list[StageConfig]
    num_train: int
    num_val: int


def preflight(config: Config, *, holdout: bool = True) -> RunInputs:
    """Validates everything that can be checked cheaply; raises ConfigError naming the key."""
    from kerastricks.data import resolve_records

    validate(config)
    try:
        stages = resolve_stages(config.train)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    _check_names(config, stages)
    prepare_records(config)
    source = resolve_records(
        config.data.records, keys=config.data.keys, num_classes=config.data.num_classes
    )
    check_records(source, "data.records", labeled=True)
    if config.data.extra_records is not None:
        extra = resolve_records(
            config.data.extra_records, keys=config.data.keys, num_classes=source.num_classes
        )
        check_records(extra, "data.extra_records", labeled=True)
    per_fold = source.fold_counts()
    if holdout:
        if config.data.val_fold not in per_fold:
            raise ConfigError(
                f"data.val_fold: fold {config.data.val_fold} is not in {config.data.records} "
                f"(folds found: {sorted(per_fold)}). Write the records with --folds K."
            )
        num_val = per_fold[config.data.val_fold]
        num_train = sum(per_fold.values()) - num_val
    else:
        num_val = 0
        num_train = sum(per_fold.values())
    return RunInputs(source, stages, num_train, num_val)


def check_records(source: Any, key: str, *, labeled: bool = False) -> None:
    """Raises a ConfigError naming `key` when a shard's size differs from its manifest's (a
    truncated or partly copied file), or when records meant for training carry no labels."""
    try:
        source.check_shards()
    except ValueError as error:
        raise ConfigError(f"{key}: {error}") from None
    if labeled and not source.labeled:
        raise ConfigError(
            f"{key}: {source.path} holds records without labels (a test set); training needs "
            "labelled records. Use them as data.test or data.unlabeled."
        )


def prepare_records(config: Config) -> None:
    """Writes the built-in example records named by `data.prepare` when they are missing."""
    records = config.data.records
    if config.data.prepare is None:
        return
    if not tf.io.gfile.exists(os.path.join(records, "manifest.json")):
        print(f"kerastricks: writing the built-in '{config.data.prepare}' records to {records}")
        PREPARERS[config.data.prepare](records, seed=config.seed)


def _check_names(config: Config, stages: list[StageConfig]) -> None:
    from kerastricks.data.augment import resolve_augmentations
    from kerastricks.models.backbones import resolve_backbone_name
    from kerastricks.optim import list_optimizers
    from kerastricks.schedules import list_schedules

    check_choice("train.optimizer.name", config.train.optimizer.name, list_optimizers())
    for i, stage in enumerate(stages):
        check_choice(f"train.stages.{i}.schedule", stage.schedule, list_schedules())
    for path, check in (
        ("model.backbone", lambda: resolve_backbone_name(config.model.backbone)),
        ("augment", lambda: resolve_augmentations(config.augment, seed=config.seed)),
    ):
        try:
            check()
        except (ValueError, KeyError, TypeError) as error:
            raise ConfigError(f"{path}: {error}") from None
    _check_fixed_size(config, stages)
    check_pretrained_weights(config)
    weights = config.model.weights
    if weights not in (None, "pretrained") and not tf.io.gfile.exists(weights):
        raise ConfigError(f"model.weights: file not found: {weights}")
    if config.data.prepare is None and not _records_exist(config.data.records):
        raise ConfigError(
            f"data.records: nothing found at {config.data.records}. Write records with "
            "`tfrecords-tools write --csv FILE --out DIR --folds 5`, or set data.prepare: digits."
        )


def missing_pretrained_requirements(backbone: str) -> list[str]:
    """The packages tfimm's `pretrained=True` download needs for `backbone` that are missing.

    tfimm converts most weights from timm's PyTorch models (`[timm]` URLs need timm and
    torch; `[pytorch]` URLs need torch). A local `.safetensors` file needs neither.
    """
    from tfimm.models.registry import model_config

    from kerastricks.models.backbones import resolve_backbone_name

    url = getattr(model_config(resolve_backbone_name(backbone)), "url", "") or ""
    if url.startswith("[timm]"):
        needed = ["timm", "torch"]
    elif url.startswith("[pytorch]"):
        needed = ["torch"]
    else:
        needed = []
    return [name for name in needed if importlib.util.find_spec(name) is None]


def check_pretrained_weights(config: Config) -> None:
    """Raises a ConfigError before any model is built when `model.weights: pretrained`
    cannot be loaded here for lack of timm or PyTorch."""
    if config.model.weights != "pretrained":
        return
    try:
        missing = missing_pretrained_requirements(config.model.backbone)
    except ValueError:
        return  # an unknown backbone: preflight names it under model.backbone
    if missing:
        shown = " and ".join({"timm": "timm", "torch": "PyTorch"}[name] for name in missing)
        raise ConfigError(
            f"model.weights: pretrained {config.model.backbone!r}: tfimm's pretrained download "
            f"needs timm and PyTorch (it converts timm's weights), and {shown} "
            f"{'is' if len(missing) == 1 else 'are'} not installed. Install them "
            f"(pip install {' '.join(missing)}), or set model.weights to a local timm "
            "`.safetensors` file, which needs neither."
        )


def _check_fixed_size(config: Config, stages: list[StageConfig]) -> None:
    # A transformer is rebuilt at each new size (kerastricks.train.resize); SWA's running
    # average is tied to one set of variables, so the two do not combine.
    from tfimm.models.registry import model_class, model_config

    from kerastricks.models.backbones import resolve_backbone_name

    name = resolve_backbone_name(config.model.backbone)
    fixed = hasattr(model_config(name), "interpolate_input") or "mlp_mixer" in (
        model_class(name).__module__
    )
    sizes = sorted({stage.image_size for stage in stages})
    if fixed and len(sizes) > 1 and config.train.swa is not None:
        raise ConfigError(
            f"train.swa: {config.model.backbone!r} is rebuilt at each new image size "
            f"(stages ask for {sizes}), which SWA's running average cannot follow. Use "
            "train.ema, one image size, or a CNN backbone."
        )


def _records_exist(records: str) -> bool:
    if tf.io.gfile.isdir(records):
        return True
    return bool(tf.io.gfile.glob(records))
