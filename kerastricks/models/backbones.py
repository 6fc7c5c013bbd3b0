"""tfimm backbones by name: discovery, creation and weights (none, pretrained, local file)."""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any

from kerastricks._compat import ensure_tfimm
from kerastricks._sizes import size_pair

# The one place tfimm is checked: every model builder imports this module first.
ensure_tfimm()

import tensorflow as tf  # noqa: E402
import tfimm  # noqa: E402
from tfimm.models.registry import is_model, model_class, model_config  # noqa: E402

from kerastricks.models.weights import load_backbone_weights  # noqa: E402

# Pretrained downloads need the network and, for most tfimm models, timm + torch.
_OFFLINE_HINT = (
    "Without network access (Kaggle submissions, tests), pass a local weights file instead: "
    "weights='path/to/model.safetensors' (a timm checkpoint, no PyTorch needed), a .pth/.bin "
    "timm checkpoint (needs torch), or a Keras file written by backbone.save_weights()."
)


def list_backbones(pattern: str = "") -> list[str]:
    """Returns the tfimm model names that match a wildcard pattern, sorted.

    Example:

    >>> list_backbones("resnet1*")[:2]
    ['resnet18', 'resnet18d']

    Args:
        pattern: fnmatch-style wildcard (``"efficientnet_b*"``); empty lists every model.
    """
    return list(tfimm.list_models(pattern))


def resolve_backbone_name(name: str) -> str:
    """Returns `name` if tfimm knows it, else raises a ValueError with the closest names."""
    if isinstance(name, str) and is_model(name):
        return name
    close = difflib.get_close_matches(str(name), tfimm.list_models(), n=5, cutoff=0.5)
    hint = f" Closest names: {', '.join(close)}." if close else ""
    raise ValueError(
        f"Unknown backbone {name!r}.{hint} List the available ones with "
        "kerastricks.models.list_backbones('pattern*') (tfimm model names)."
    )


def backbone_kwargs(
    name: str, input_size: int | tuple[int, int] | None = None, **tfimm_kwargs: Any
) -> dict[str, Any]:
    """Returns the tfimm config overrides that `create_backbone` uses for `name`.

    The backbone gives pooled features (``nb_classes=0``); its own dropout is switched off
    (``drop_rate=0``) because the kerastricks head has one, as timm's
    ``forward_head(pre_logits=True)`` stops before the classifier dropout. User keyword
    arguments win over these defaults; unknown ones raise a ValueError.

    Transformers are built at `input_size` and keep ``interpolate_input=False``: in tfimm
    0.2.14 ``interpolate_input=True`` only runs eagerly (it compares the token grid, a
    tensor, as a Python bool, which fails inside ``tf.function``, ``fit`` and functional
    models). Pretrained position embeddings are interpolated to `input_size` when the
    weights are loaded instead.
    """
    fields = {field.name for field in dataclasses.fields(model_config(name))}
    unknown = sorted(set(tfimm_kwargs) - fields - {"name"})
    if unknown:
        raise ValueError(
            f"Backbone {name!r} has no tfimm config field(s) {unknown}. "
            f"Valid fields: {sorted(fields - {'name', 'url'})}."
        )
    kwargs: dict[str, Any] = {"nb_classes": 0}
    if "drop_rate" in fields:
        kwargs["drop_rate"] = 0.0
    if input_size is not None:
        kwargs["input_size"] = size_pair(input_size, "input_size")
    kwargs.update(tfimm_kwargs)
    return kwargs


def _create_pretrained(name: str, kwargs: dict[str, Any]) -> tf.keras.Model:
    try:
        return tfimm.create_model(name, pretrained=True, **kwargs)
    except Exception as error:  # tfimm raises many types (ImportError, URLError, OSError)
        raise RuntimeError(
            f"Could not load pretrained weights for backbone {name!r} through tfimm "
            f"({type(error).__name__}: {error}). {_OFFLINE_HINT}"
        ) from error


def create_backbone(
    name: str,
    weights: str | None = None,
    *,
    input_size: int | tuple[int, int] | None = None,
    **tfimm_kwargs: Any,
) -> tf.keras.Model:
    """Creates a tfimm backbone without classifier: images -> pooled features.

    The model expects images normalised with ``model.cfg.mean/std`` on a [0, 1] scale;
    `build_classifier` adds that normalisation for [0, 255] pixels.

    Example:

    ```python
    backbone = create_backbone("resnet18", input_size=64)
    features = backbone(tf.zeros([2, 64, 64, 3]))  # [2, 512]
    offline = create_backbone("resnet18", weights="resnet18.safetensors")
    ```

    Args:
        name: tfimm model name (see `list_backbones`).
        weights: None (random init), ``"pretrained"`` (tfimm's download: needs network,
            usually timm + torch), or a local file: a timm checkpoint (``.safetensors``, or
            ``.pth``/``.bin`` with torch installed) or a Keras weights file (``.h5``,
            ``.weights.h5``, TF checkpoint prefix) saved by ``backbone.save_weights``.
        input_size: image size the model is built at (int or (height, width)). CNNs then
            run at any size; transformers and MLP-Mixers only at this one (their position
            embeddings or token MLPs are sized for it; timm weights are interpolated).
        **tfimm_kwargs: tfimm config overrides (e.g. ``drop_path_rate=0.1``).
    """
    name = resolve_backbone_name(name)
    kwargs = backbone_kwargs(name, input_size, **tfimm_kwargs)
    if weights == "pretrained":
        return _create_pretrained(name, kwargs)
    if weights is not None and not isinstance(weights, str):
        raise TypeError(f"weights must be None, 'pretrained' or a file path; received {weights!r}.")
    try:
        model = tfimm.create_model(name, **kwargs)
    except (ValueError, tf.errors.InvalidArgumentError) as error:
        raise ValueError(
            f"tfimm could not build backbone {name!r} with {kwargs}: {error}. Pick an image "
            f"size the architecture supports (its default is {model_config(name).input_size}; "
            "Swin needs every stage grid divisible by its window size)."
        ) from error
    if weights is not None:
        load_backbone_weights(model, weights, default_model=lambda: _default_model(name))
    return model


def _default_model(name: str) -> tf.keras.Model:
    """The model with tfimm's registry config, which timm checkpoints are written for."""
    cfg = dataclasses.replace(model_config(name), nb_classes=0)
    model = model_class(name)(cfg)
    model(model.dummy_inputs)
    return model


def is_tfimm_model(layer: Any) -> bool:
    """True when `layer` is a model built by tfimm (a Keras model with a tfimm `cfg`)."""
    return (
        isinstance(layer, tf.keras.Model)
        and type(layer).__module__.startswith("tfimm.")
        and hasattr(layer, "cfg")
    )
