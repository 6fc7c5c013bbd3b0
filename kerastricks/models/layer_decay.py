"""timm's layer-wise LR decay on tfimm models: each variable gets the LR timm gives it.

timm's `param_groups_layer_decay` ranks parameters by depth, one depth per block (the stem
first, a final norm with the last block, the classifier last), and scales the LR of depth
`i` of `n` by `layer_decay ** (n - 1 - i)`. `kerastricks.models.layer_groups` is coarser
(one group per stage, for unfreezing), so `spread_lrs` over it gives other LRs: here the
variables are ranked by timm's own rule (`_family_rules.DEPTH_RULES`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import tensorflow as tf

import kerastricks  # noqa: F401  (selects tf-keras before TensorFlow is imported)
from kerastricks.models._family_rules import DEPTH_RULES, JOIN_PREVIOUS, family_of
from kerastricks.models.groups import LayerGroup, _walk, layer_groups
from kerastricks.optim.spread import spread_lrs

_LAST = (math.inf,)


def _backbone_of(model: tf.keras.Model) -> tf.keras.Model | None:
    """The one tfimm backbone of `model` (itself, or nested as `build_classifier` does)."""
    if family_of(model) is not None:
        return model
    layers: list[tf.keras.layers.Layer] = []
    _walk(model, layers, [])
    backbones = [layer for layer in layers if family_of(layer) is not None]
    return backbones[0] if len(backbones) == 1 else None


def _backbone_keys(backbone: tf.keras.Model) -> dict[Any, tuple]:
    """variable.ref() -> depth key, from the timm name tfimm's weight conversion gives."""
    # Imported here: models without a tfimm backbone (kerastricks.fit) need no tfimm.
    from tfimm.utils.timm import convert_tf_weight_name_to_pt_weight_name

    rules = DEPTH_RULES[family_of(backbone)]
    names = {
        variable.ref(): convert_tf_weight_name_to_pt_weight_name(variable.name)[0]
        for variable in backbone.weights
    }
    every_name = list(names.values())

    def key_of(name: str) -> tuple:
        for rule in rules:
            key = rule.key(name, every_name)
            if key is not None:
                return key
        return _LAST  # the classifier, and whatever timm's matcher leaves out

    return {ref: key_of(name) for ref, name in names.items()}


def _depth_keys(model: tf.keras.Model, backbone: tf.keras.Model) -> dict[Any, tuple]:
    """variable.ref() -> depth key, for every variable of `model`."""
    keys = _backbone_keys(backbone)
    if model is backbone:
        return keys
    first = min(keys.values(), default=_LAST)
    layers: list[tf.keras.layers.Layer] = []
    _walk(model, layers, [])
    after_backbone = False
    for layer in layers:
        after_backbone = after_backbone or layer is backbone
        for variable in layer.weights:
            # A new head trains as timm's classifier; an adapter before the backbone with
            # its stem.
            keys.setdefault(variable.ref(), _LAST if after_backbone else first)
    for variable in model.weights:
        keys.setdefault(variable.ref(), first)  # variables a wrapping model owns directly
    return keys


def layer_depths(model: tf.keras.Model) -> list[list[tf.Variable]] | None:
    """The variables of `model` by timm's layer-decay depth, input side first.

    Only variables created trainable are listed (BatchNorm statistics never get a step).
    Returns None when the model has no tfimm backbone of a family for which timm has a
    `group_matcher` (see docs/layer_groups.md).

    Example:

    ```python
    depths = layer_depths(build_classifier("resnet18", 10))
    len(depths)  # 10: stem, 8 blocks, head
    ```

    Args:
        model: a built tfimm model, or a model holding one tfimm backbone
            (`build_classifier`); layers after the backbone are the head.
    """
    backbone = _backbone_of(model)
    if backbone is None or family_of(backbone) not in DEPTH_RULES:
        return None
    keys = _depth_keys(model, backbone)
    trainable = [variable for variable in model.weights if variable.trainable]
    depth_of_key: dict[tuple, int] = {}
    depth = -1
    for key in sorted({keys[variable.ref()] for variable in trainable}):
        if depth < 0 or key[-1] != JOIN_PREVIOUS:
            depth += 1
        depth_of_key[key] = depth
    depths: list[list[tf.Variable]] = [[] for _ in range(depth + 1)]
    for variable in trainable:
        depths[depth_of_key[keys[variable.ref()]]].append(variable)
    return depths


def layer_decay_multipliers(
    model: tf.keras.Model, layer_decay: float
) -> tuple[list[list[tf.Variable]], list[float]]:
    """timm's layer-decay LR multipliers: ``(variable_lists, multipliers)``, head = 1.0.

    Each variable gets the `lr_scale` that timm's `param_groups_layer_decay` gives the same
    parameter of the same timm model. For models where timm has no `group_matcher`, the
    decay runs over `layer_groups(model)` instead.

    Example:

    ```python
    model = build_classifier("vit_tiny_patch16_224", 10)
    optimizer = with_lr_multipliers(AdamW(1e-3), *layer_decay_multipliers(model, 0.75))
    ```

    Args:
        model: a built model (see `layer_depths`).
        layer_decay: the factor between neighbouring depths, > 0.
    """
    lists = layer_depths(model)
    if lists is None:
        lists = [group.variables for group in layer_groups(model)]
    return lists, spread_lrs(len(lists), {"layer_decay": layer_decay})


@dataclass
class LRPartition:
    """Variable lists fixed for a model that take any `lr_mult` spec, stage after stage.

    Each list is the part of one layer group at one timm depth, so that a `layer_decay`
    spec gives timm's per-depth LRs and any other spec (`slice`, a list) its per-group
    LRs, while the optimizer keeps one set of lists (`set_lr_multipliers` between stages).

    Example:

    ```python
    groups = layer_groups(model)
    partition = lr_partition(model, groups)
    optimizer = with_lr_multipliers(optimizer, partition.variables,
                                    partition.multipliers({"layer_decay": 0.75}))
    set_lr_multipliers(optimizer, partition.multipliers({"slice": [1e-5, 1e-3]}))
    ```

    Args:
        variables: the variable lists, to pass to `with_lr_multipliers`.
        group_index: index into the layer groups of each list.
        depth: timm depth of each list; None where timm has no matcher for the family.
        num_groups: number of layer groups.
        num_depths: number of timm depths (None with `depth`).
    """

    variables: list[list[tf.Variable]]
    group_index: list[int]
    depth: list[int] | None
    num_groups: int
    num_depths: int | None

    def multipliers(self, spec: Mapping[str, Any] | Sequence[float] | None) -> list[float]:
        """One multiplier per list for an `lr_mult` spec (`spread_lrs` forms); None: 1.0."""
        if spec is None:
            return [1.0] * len(self.variables)
        if isinstance(spec, Mapping) and "layer_decay" in spec and self.depth is not None:
            by_depth = spread_lrs(self.num_depths, spec)
            return [by_depth[depth] for depth in self.depth]
        by_group = spread_lrs(self.num_groups, spec)
        return [by_group[index] for index in self.group_index]


def lr_partition(model: tf.keras.Model, groups: list[LayerGroup]) -> LRPartition:
    """Splits `model`'s layer groups by timm depth (see `LRPartition`).

    Where timm has no matcher for the model, the lists are the groups' variables.

    Args:
        model: the model the groups split.
        groups: from `layer_groups(model, n)`.
    """
    depths = layer_depths(model)
    if depths is None:
        lists = [group.variables for group in groups]
        return LRPartition(lists, list(range(len(groups))), None, len(groups), None)
    depth_of = {
        variable.ref(): depth for depth, members in enumerate(depths) for variable in members
    }
    cells: dict[tuple[int, int], list[tf.Variable]] = {}
    for index, group in enumerate(groups):
        for variable in group.variables:
            depth = depth_of.get(variable.ref())
            if depth is not None:
                cells.setdefault((index, depth), []).append(variable)
    order = sorted(cells)
    return LRPartition(
        [cells[cell] for cell in order],
        [index for index, _ in order],
        [depth for _, depth in order],
        len(groups),
        len(depths),
    )
