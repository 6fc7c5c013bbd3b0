"""Progressive resizing for backbones that run at one size only (ViT, Swin, MLP-Mixer).

tfimm 0.2.14 resizes transformer position embeddings only eagerly, never inside a compiled
graph, so such a model cannot simply see a larger image. At a stage with a new size the
trainer builds the classifier again at that size and carries everything over: the backbone's
weights through tfimm's `transfer_weights` (which interpolates the position embeddings), the
head's weights by layer name, and the optimizer's state (step counter, moments, EMA) variable
by variable; only the slots of the resized embeddings start again from zero.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf
from tfimm.models.factory import transfer_weights

from kerastricks.models import needs_fixed_size
from kerastricks.models.backbones import is_tfimm_model
from kerastricks.optim.inner import optimizer_chain
from kerastricks.train.build import TrainingParts


def backbone_of(model: tf.keras.Model) -> tf.keras.Model:
    """The tfimm backbone inside a classifier built by `build_classifier`."""
    for layer in model.layers:
        if is_tfimm_model(layer):
            return layer
    raise ValueError(f"model {model.name!r} holds no tfimm backbone")


def needs_rebuild(model: tf.keras.Model, image_size: int) -> bool:
    """True when a fixed-size backbone was built for another image size."""
    return needs_fixed_size(backbone_of(model)) and model.input_shape[1] != image_size


def carry_over(old: TrainingParts, new: TrainingParts) -> None:
    """Copies weights and optimizer state from `old` into the freshly built `new` parts."""
    transfer_weights(backbone_of(old.model), backbone_of(new.model))
    new_backbone = backbone_of(new.model)
    for layer in new.model.layers:
        if layer is not new_backbone and layer.weights:
            layer.set_weights(old.model.get_layer(layer.name).get_weights())
    _copy_optimizer_state(old.optimizer, new.optimizer)


def _copy_optimizer_state(old: Any, new: Any) -> None:
    # Both optimizers were built on their model's variables in the same order, so their
    # state variables line up one to one; a resized embedding's slots stay at zero.
    old_variables = _state_variables(old)
    new_variables = _state_variables(new)
    if len(old_variables) != len(new_variables):
        raise RuntimeError(
            f"optimizer state does not line up after resizing ({len(old_variables)} vs "
            f"{len(new_variables)} variables)"
        )
    for source, target in zip(old_variables, new_variables, strict=True):
        if source.shape == target.shape:
            target.assign(source)


def _state_variables(optimizer: Any) -> list[tf.Variable]:
    # Every wrapper level's state (a wrapper may list its inner optimizer's variables too).
    variables = {}
    for level in optimizer_chain(optimizer):
        for variable in level.variables:
            variables.setdefault(id(variable), variable)
    return list(variables.values())
