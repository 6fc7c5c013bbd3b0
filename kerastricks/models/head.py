"""A new head on a tfimm backbone: raw pixels in, float32 logits out."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import tensorflow as tf

import kerastricks  # noqa: F401  (selects tf-keras before TensorFlow is imported)
from kerastricks._sizes import size_pair
from kerastricks.config.schema import HeadConfig
from kerastricks.config.validate import check_head
from kerastricks.models.backbones import create_backbone, is_tfimm_model

HEAD_PREFIX = "head/"
# Token-mixing MLPs: fixed token grid, no interpolation.
_STATIC_SIZE_MODULES = ("tfimm.architectures.mlp_mixer",)


def _head_config(head: HeadConfig | dict[str, Any] | None) -> HeadConfig:
    if head is None:
        head = HeadConfig()
    if not isinstance(head, HeadConfig):
        fields = {field.name for field in dataclasses.fields(HeadConfig)}
        unknown = sorted(set(head) - fields)
        if unknown:
            raise ValueError(f"Unknown head option(s) {unknown}; valid ones: {sorted(fields)}.")
        head = HeadConfig(**head)
    check_head(head, "head")
    return head


def needs_fixed_size(backbone: tf.keras.Model) -> bool:
    """True when a tfimm backbone runs only at the image size it was built for.

    Transformers (any tfimm config with ``interpolate_input``: ViT, DeiT, CaiT, PiT, PVT,
    Swin) size their position embeddings for ``cfg.input_size`` and tfimm 0.2.14 cannot
    interpolate them inside a graph; MLP-Mixers have token MLPs of that size. For such a
    backbone, a new image size means a new backbone (`create_backbone(..., input_size=)`).
    """
    return type(backbone).__module__ in _STATIC_SIZE_MODULES or hasattr(
        backbone.cfg, "interpolate_input"
    )


def _input_shape(backbone: tf.keras.Model, input_size: Any) -> tuple[Any, Any, int]:
    channels = backbone.cfg.in_channels
    if not needs_fixed_size(backbone):
        size = (None, None) if input_size is None else size_pair(input_size)
        return (*size, channels)
    built_for = size_pair(backbone.cfg.input_size)
    if input_size is not None and size_pair(input_size) != built_for:
        raise ValueError(
            f"Backbone {backbone.cfg.name!r} runs only at the size it was built for, "
            f"{built_for}; received input_size={input_size!r}. Create it at that size: "
            f"create_backbone({backbone.cfg.name!r}, input_size={input_size!r})."
        )
    return (*built_for, channels)


def _normalization(backbone: tf.keras.Model) -> tf.keras.layers.Layer:
    """tfimm's preprocessing ((x/255 - mean)/std) as one built-in, serialisable layer."""
    channels = backbone.cfg.in_channels
    mean = np.resize(np.asarray(backbone.cfg.mean, "float32"), channels) * 255.0
    std = np.resize(np.asarray(backbone.cfg.std, "float32"), channels) * 255.0
    return tf.keras.layers.Normalization(mean=mean, variance=std**2, name="normalize")


def _spatial_features(features: dict[str, Any]) -> Any:
    """The last feature map (rank 4) of a tfimm model called with return_features=True."""
    for key in ("conv_features", "features"):
        value = features.get(key)
        if value is not None and value.shape.rank == 4:
            return value
    return None


def _pool(spatial: Any, pooling: str) -> Any:
    avg = tf.keras.layers.GlobalAveragePooling2D(name=HEAD_PREFIX + "avg_pool")
    peak = tf.keras.layers.GlobalMaxPooling2D(name=HEAD_PREFIX + "max_pool")
    if pooling == "avg":
        return avg(spatial)
    if pooling == "max":
        return peak(spatial)
    pooled = tf.keras.layers.Average(name=HEAD_PREFIX + "avgmax")([avg(spatial), peak(spatial)])
    return pooled


def _backbone_features(backbone: tf.keras.Model, images: Any, pooling: str) -> Any:
    if pooling == "avg":
        return backbone(images)
    if any(layer.name.startswith("head/norm") for layer in backbone.layers):
        raise ValueError(
            f"Backbone {backbone.cfg.name!r} normalises after its own average pooling "
            f"(ConvNeXt-style head/norm); pooling={pooling!r} would skip that layer. "
            "Use head.pooling='avg'."
        )
    pooled, features = backbone(images, return_features=True)
    spatial = _spatial_features(features)
    return pooled if spatial is None else _pool(spatial, pooling)


def build_classifier(
    backbone: str | tf.keras.Model,
    num_outputs: int,
    head: HeadConfig | dict[str, Any] | None = None,
    *,
    input_size: int | tuple[int, int] | None = None,
    name: str | None = None,
) -> tf.keras.Model:
    """Builds a functional model: [0, 255] pixels -> normalise -> backbone -> head -> logits.

    The normalisation (the backbone's ``cfg.mean/std``) is a layer inside the model, so an
    exported model takes raw pixels. The head's input size comes from the backbone's output
    (the seeds' "lazy layer"): nobody types a feature count. Logits are float32 under any
    mixed-precision policy. Head layers are named ``head/...`` (`layer_groups` puts them last).

    Example:

    ```python
    model = build_classifier("resnet18", num_outputs=10, head={"dropout": 0.3})
    logits = model(tf.zeros([2, 64, 64, 3]))  # float32 [2, 10]
    ```

    Args:
        backbone: tfimm model name (created with random weights) or a model from
            `create_backbone` (use that to load weights).
        num_outputs: number of logits (classes, or regression targets).
        head: `HeadConfig` or a dict of its fields; None for the defaults.
        input_size: static image size (int or (height, width)). None keeps height and width
            dynamic for CNNs, so one model serves every stage of progressive resizing.
            Transformers and MLP-Mixers run at one size only (see `needs_fixed_size`): the
            backbone is built at `input_size` (a name) or must have been (a model).
        name: model name; defaults to ``"<backbone>_classifier"``.
    """
    config = _head_config(head)
    if not isinstance(num_outputs, int) or num_outputs < 1:
        raise ValueError(f"num_outputs must be a positive int; received {num_outputs!r}.")
    if isinstance(backbone, str):
        backbone = create_backbone(backbone, input_size=input_size)
    if not is_tfimm_model(backbone):
        raise TypeError(
            "build_classifier needs a tfimm backbone (a name, or a model from create_backbone);"
            f" received {type(backbone).__name__}."
        )
    images = tf.keras.Input(_input_shape(backbone, input_size), dtype="float32", name="images")
    features = _backbone_features(backbone, _normalization(backbone)(images), config.pooling)
    if config.hidden:
        features = tf.keras.layers.Dense(
            config.hidden, activation=config.hidden_activation, name=HEAD_PREFIX + "hidden"
        )(features)
    if config.dropout > 0:
        features = tf.keras.layers.Dropout(config.dropout, name=HEAD_PREFIX + "dropout")(features)
    logits = tf.keras.layers.Dense(num_outputs, dtype="float32", name=HEAD_PREFIX + "logits")(
        features
    )
    # The float32 Dense already returns float32; the cast keeps that true if someone swaps
    # the policy of the last layer, since float16 logits overflow in the loss.
    logits = tf.keras.layers.Activation("linear", dtype="float32", name=HEAD_PREFIX + "cast")(
        logits
    )
    return tf.keras.Model(images, logits, name=name or f"{backbone.cfg.name}_classifier")


def create_model(
    name: str,
    num_classes: int,
    weights: str | None = None,
    *,
    head: HeadConfig | dict[str, Any] | None = None,
    input_size: int | tuple[int, int] | None = None,
    **tfimm_kwargs: Any,
) -> tf.keras.Model:
    """A tfimm backbone with a new head in one call, as `timm.create_model(name,
    num_classes=..., pretrained=...)`: `create_backbone` then `build_classifier`.

    Example:

    ```python
    model = create_model("resnet18", num_classes=10, weights="resnet18.safetensors")
    logits = model(tf.zeros([2, 64, 64, 3]))  # float32 [2, 10], from [0, 255] pixels
    ```

    Args:
        name: tfimm model name (see `list_backbones`).
        num_classes: number of logits (classes, or regression targets).
        weights: the backbone's weights: None (random init), ``"pretrained"`` or a local
            file (see `create_backbone`).
        head: `HeadConfig` or a dict of its fields; None for the defaults.
        input_size: image size (int or (height, width)); transformers run at this size only.
        **tfimm_kwargs: tfimm config overrides (e.g. ``drop_path_rate=0.1``).
    """
    backbone = create_backbone(name, weights, input_size=input_size, **tfimm_kwargs)
    return build_classifier(backbone, num_classes, head, input_size=input_size)
