"""Ordered layer groups (stem ... late stages, head) for LR multipliers and unfreezing."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import tensorflow as tf

import kerastricks  # noqa: F401  (selects tf-keras before TensorFlow is imported)
from kerastricks.models._family_rules import FAMILY_RULES, HEAD, NECK, STEM, family_of

# fastai v1's cnn_learner split a model into 3 layer groups; the fallback does the same.
DEFAULT_FALLBACK_GROUPS = 3


@dataclass
class LayerGroup:
    """An ordered slice of a model: layers (and model-level variables) trained together.

    Example:

    ```python
    groups = layer_groups(build_classifier("resnet18", 10))
    [group.name for group in groups]  # ['stem', 'layer1', ..., 'layer4', 'head']
    ```

    Args:
        name: group name (``stem``, ``layer3``, ``blocks/7``, ``neck``, ``head``, ...).
        layers: the Keras layers of the group that own variables.
        loose_variables: variables that a model owns directly, not through a layer (ViT's
            ``cls_token`` and ``pos_embed``).
    """

    name: str
    layers: list[tf.keras.layers.Layer] = field(default_factory=list)
    loose_variables: list[tf.Variable] = field(default_factory=list)
    # The model owning each loose variable (to freeze it) and the model the groups split.
    _loose_owners: list[tf.keras.Model] = field(default_factory=list, repr=False)
    _root: tf.keras.Model | None = field(default=None, repr=False, compare=False)

    @property
    def variables(self) -> list[tf.Variable]:
        """Every variable of the group (trainable or not)."""
        return [v for layer in self.layers for v in layer.weights] + list(self.loose_variables)

    @property
    def trainable_variables(self) -> list[tf.Variable]:
        """The variables of the group that the optimizer updates now."""
        variables = [v for layer in self.layers for v in layer.trainable_weights]
        for variable, owner in self.loose_items():
            if owner.trainable and any(variable is v for v in owner._trainable_weights):
                variables.append(variable)
        return variables

    def loose_items(self) -> list[tuple[tf.Variable, tf.keras.Model]]:
        """(variable, owning model) for each loose variable."""
        return list(zip(self.loose_variables, self._loose_owners, strict=True))

    def add_loose(self, variable: tf.Variable, owner: tf.keras.Model) -> None:
        """Adds a variable that `owner` holds directly (not through a layer)."""
        self.loose_variables.append(variable)
        self._loose_owners.append(owner)


def _own_variables(model: tf.keras.Model) -> list[tf.Variable]:
    # Keras keeps a layer's own variables (not its sublayers') in these two lists.
    return list(model._trainable_weights) + list(model._non_trainable_weights)


def _short_name(variable: tf.Variable) -> str:
    """'vit_tiny/pos_embed:0' -> 'pos_embed' (the model name prefix is made unique by TF)."""
    return variable.name.replace(":0", "").split("/", 1)[-1]


def _is_classifier(model: tf.keras.Model, layer: tf.keras.layers.Layer) -> bool:
    names = getattr(model.cfg, "classifier", None) or ()
    names = (names,) if isinstance(names, str) else tuple(names)
    # tfimm ResNet wraps its classifier in a layer named "remove" that is dropped from names.
    shorts = [_short_name(v).replace("remove/", "") for v in layer.weights]
    return any(short.startswith(name + "/") for short in shorts for name in names)


def _match(family: str, text: str) -> tuple[float, str] | None:
    for rule in FAMILY_RULES[family]:
        found = rule.match(text)
        if found is not None:
            return found
    return None


def _tfimm_groups(model: tf.keras.Model, family: str) -> list[LayerGroup]:
    """The natural groups of a tfimm model, ordered stem, stages, neck, head."""
    keyed: dict[tuple[float, str], LayerGroup] = {}
    seen_stage = False
    for layer in model.layers:
        if not layer.weights:
            continue
        key = _match(family, layer.name)
        if key is None and _is_classifier(model, layer):
            key = (float("inf"), HEAD)
        elif key is None:
            key = (1e9, NECK) if seen_stage else (-1.0, STEM)
        seen_stage = seen_stage or key[1] not in (STEM, NECK, HEAD)
        keyed.setdefault(key, LayerGroup(key[1])).layers.append(layer)
    for variable in _own_variables(model):
        key = _match(family, _short_name(variable)) or (-1.0, STEM)
        keyed.setdefault(key, LayerGroup(key[1])).add_loose(variable, model)
    return [keyed[key] for key in sorted(keyed)]


def _walk(model: tf.keras.Model, layers: list, loose: list) -> None:
    """Collects the layers with weights in order, descending into nested models except tfimm
    backbones of a known family (kept whole), and the variables models own directly."""
    loose.extend((variable, model) for variable in _own_variables(model))
    for layer in model.layers:
        if isinstance(layer, tf.keras.Model) and family_of(layer) is None:
            _walk(layer, layers, loose)
        elif layer.weights:
            layers.append(layer)


def _natural_groups(model: tf.keras.Model) -> tuple[list[LayerGroup], bool]:
    """The model's natural groups, and whether they came from a tfimm family's rules."""
    family = family_of(model)
    if family is not None:
        return _tfimm_groups(model, family), True
    layers: list[tf.keras.layers.Layer] = []
    loose: list[tuple[tf.Variable, tf.keras.Model]] = []
    _walk(model, layers, loose)
    backbones = [index for index, layer in enumerate(layers) if family_of(layer)]
    if len(backbones) == 1:
        position = backbones[0]
        backbone = layers[position]
        groups = _tfimm_groups(backbone, family_of(backbone))
        # Layers with weights before the backbone (an adapter) train with its first group.
        groups[0].layers[:0] = layers[:position]
        if layers[position + 1 :]:
            groups.append(LayerGroup(HEAD, layers[position + 1 :]))
    else:
        groups = [LayerGroup(layer.name, [layer]) for layer in layers]
        if groups:
            groups[-1].name = HEAD
    if loose and not groups:
        groups = [LayerGroup(STEM)]
    for variable, owner in loose:
        groups[0].add_loose(variable, owner)
    return groups, len(backbones) == 1


def _merge(name: str, groups: list[LayerGroup]) -> LayerGroup:
    merged = LayerGroup(name)
    for group in groups:
        merged.layers.extend(group.layers)
        for variable, owner in group.loose_items():
            merged.add_loose(variable, owner)
    return merged


def _merge_to(groups: list[LayerGroup], n: int) -> list[LayerGroup]:
    keep_head = n >= 2 and groups[-1].name == HEAD
    body = groups[:-1] if keep_head else groups
    merged = []
    for chunk in np.array_split(np.arange(len(body)), n - int(keep_head)):
        members = [body[index] for index in chunk]
        names = [member.name for member in members]
        name = names[0] if len(names) == 1 else f"{names[0]}..{names[-1]}"
        merged.append(_merge(name, members))
    return merged + ([groups[-1]] if keep_head else [])


def _split_to(groups: list[LayerGroup], n: int) -> list[LayerGroup]:
    groups = list(groups)
    while len(groups) < n:
        index = max(range(len(groups)), key=lambda i: len(groups[i].layers))
        group = groups[index]
        if len(group.layers) < 2:
            raise ValueError(
                f"Cannot split the model into n={n} layer groups: it has only "
                f"{len(groups)} groups of single layers. Pass n <= {len(groups)}."
            )
        half = len(group.layers) // 2
        first = _merge(f"{group.name}[0]", [group])
        first.layers = group.layers[:half]
        second = LayerGroup(f"{group.name}[1]", group.layers[half:])
        groups[index : index + 1] = [first, second]
    return groups


def _check_cover(model: tf.keras.Model, groups: list[LayerGroup]) -> None:
    seen: dict = {}
    for group in groups:
        for variable in group.variables:
            seen[variable.ref()] = seen.get(variable.ref(), 0) + 1
    wrong = [v.name for v in model.weights if seen.get(v.ref()) != 1]
    if wrong or len(seen) != len(model.weights):
        raise RuntimeError(
            f"layer_groups did not place every variable of {model.name!r} in exactly one group "
            f"(first: {wrong[:10]}). Please report this with the model's summary()."
        )


def layer_groups(model: tf.keras.Model, n: int | None = None) -> list[LayerGroup]:
    """Splits a model into ordered layer groups, input side first and the head last.

    tfimm backbones (bare, or nested in a model from `build_classifier`) are split by
    family: stem, stages (blocks for isotropic transformers), neck, then the head; see
    docs/layer_groups.md. Any other Keras model is split evenly along its layers with
    weights, the last such layer being the head. Every variable lands in exactly one group.

    Example:

    ```python
    model = build_classifier("resnet18", num_outputs=10)
    [g.name for g in layer_groups(model)]  # stem, layer1..layer4, head
    [g.name for g in layer_groups(model, n=3)]  # stem..layer2, layer3..layer4, head
    ```

    Args:
        model: a built Keras model.
        n: number of groups; None gives the family's natural groups (3 for other models).
            Neighbouring groups are merged (the head stays alone) or the largest split.
    """
    if not isinstance(model, tf.keras.Model):
        raise TypeError(f"layer_groups needs a tf.keras.Model; received {type(model).__name__}.")
    if not model.built:
        raise ValueError(f"Model {model.name!r} is not built: call it on a batch first.")
    if n is not None and (not isinstance(n, int) or n < 1):
        raise ValueError(f"n must be a positive int or None; received n={n!r}.")
    groups, by_family = _natural_groups(model)
    target = n if n is not None else (None if by_family else DEFAULT_FALLBACK_GROUPS)
    if target is not None and target < len(groups):
        groups = _merge_to(groups, target)
    elif target is not None and target > len(groups) and n is not None:
        groups = _split_to(groups, target)
    _check_cover(model, groups)
    for group in groups:
        group._root = model
    return groups


def _set_loose_trainable(owner: tf.keras.Model, variable: tf.Variable, trainable: bool) -> None:
    # A tf.Variable's trainable flag is fixed at creation; Keras decides what the optimizer
    # sees from the owner's two lists, so a frozen model-level variable changes list.
    source, target = owner._trainable_weights, owner._non_trainable_weights
    if trainable:
        source, target = target, source
    if any(variable is v for v in source):
        source[:] = [v for v in source if v is not variable]
        target.append(variable)


def freeze_groups(groups: list[LayerGroup], trainable_top_k: int | str | None) -> None:
    """Freezes every group but the last `trainable_top_k` ones (None or "all": none frozen).

    Frozen layers get ``trainable=False``, so their BatchNorm runs in inference mode (Keras 2
    semantics, as in fastai's ``freeze`` and Lightning's ``BackboneFinetuning``). Compile the
    model again afterwards for ``fit`` to see the change.

    Example:

    ```python
    groups = layer_groups(model)
    freeze_groups(groups, 1)  # train the head only
    model.compile(...)
    ```

    Args:
        groups: from `layer_groups`, in order.
        trainable_top_k: how many groups, counted from the head, stay trainable.
    """
    count = len(groups)
    k = count if trainable_top_k in (None, "all") else trainable_top_k
    if not isinstance(k, int) or not 0 <= k <= count:
        raise ValueError(
            f"trainable_top_k must be an int in [0, {count}], 'all' or None; "
            f"received {trainable_top_k!r}."
        )
    roots = {id(group._root): group._root for group in groups if group._root is not None}
    for root in roots.values():
        root.trainable = True  # recursive; the loop below then freezes what it must
    for index, group in enumerate(groups):
        trainable = index >= count - k
        for layer in group.layers:
            layer.trainable = trainable
        for variable, owner in group.loose_items():
            _set_loose_trainable(owner, variable, trainable)


def set_trainable(
    model: tf.keras.Model,
    groups: list[LayerGroup] | None = None,
    k: int | str | None = None,
) -> list[LayerGroup]:
    """Makes only the top `k` layer groups of `model` trainable and returns the groups.

    Example:

    ```python
    set_trainable(model, k=1)  # frozen backbone, trainable head (fastai fine_tune stage 1)
    set_trainable(model, k="all")
    ```

    Args:
        model: the model the groups belong to.
        groups: from `layer_groups(model)`; None computes the natural groups.
        k: groups counted from the head that train; None or "all" unfreezes everything.
    """
    groups = layer_groups(model) if groups is None else groups
    model.trainable = True
    freeze_groups(groups, k)
    return groups
