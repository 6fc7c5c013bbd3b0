"""Backbone weights from local files: timm checkpoints (no PyTorch for .safetensors) and Keras.

A timm checkpoint is converted with tfimm's own name mapping and transposes
(`tfimm.utils.timm`), so a file written by ``timm.create_model(name).state_dict()`` gives the
features timm gives. tfimm's loader takes torch tensors and stops at the first missing key;
this one takes numpy arrays and reports every missing, misshapen and unused tensor at once.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Callable

import numpy as np
import tensorflow as tf
from tfimm.models.factory import transfer_weights
from tfimm.utils.timm import TransposeType, convert_tf_weight_name_to_pt_weight_name

import kerastricks  # noqa: F401  (selects tf-keras before TensorFlow is imported)

TIMM_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
_SHOWN = 10
_FIX_HINT = (
    "The file must be a timm checkpoint of this exact architecture "
    "(timm.create_model(name).state_dict(), saved with safetensors or torch.save), or a Keras "
    "file from create_backbone(name, ...).save_weights(path) with the same tfimm arguments. "
    "Pass weights=None to start from random weights."
)


def _listing(items: list[str]) -> str:
    shown = ", ".join(items[:_SHOWN])
    more = f" and {len(items) - _SHOWN} more" if len(items) > _SHOWN else ""
    return f"{len(items)}: {shown}{more}"


def _read_bytes(path: str) -> bytes:
    with tf.io.gfile.GFile(path, "rb") as handle:
        return handle.read()


def _read_torch_state(path: str) -> dict:
    try:
        import torch
    except ImportError as error:
        raise ImportError(
            f"Reading {path} needs the 'torch' package (pip install torch), which kerastricks "
            "does not require. Or convert the checkpoint once to .safetensors "
            "(safetensors.torch.save_file(state_dict, 'model.safetensors')) and pass that."
        ) from error
    import io

    state = torch.load(io.BytesIO(_read_bytes(path)), map_location="cpu", weights_only=True)
    for wrapper in ("state_dict", "model"):  # timm train.py and other trainers wrap it
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    return {key: value.detach().cpu().numpy() for key, value in state.items()}


def read_timm_state_dict(path: str) -> dict[str, np.ndarray]:
    """Reads a timm checkpoint file into a dict of numpy arrays (timm parameter names).

    Args:
        path: ``.safetensors`` (read with numpy only) or ``.pth``/``.pt``/``.bin`` (needs
            torch); local or any `tf.io.gfile` path (``gs://...``).
    """
    if path.endswith(".safetensors"):
        from safetensors.numpy import load

        state = load(_read_bytes(path))
    else:
        state = _read_torch_state(path)
    # DataParallel / DistributedDataParallel checkpoints prefix every key (timm strips it too).
    return {re.sub(r"^module\.", "", key): np.asarray(value) for key, value in state.items()}


def _timm_name(variable: tf.Variable) -> tuple[str, TransposeType]:
    return convert_tf_weight_name_to_pt_weight_name(variable.name, tf_weight_shape=variable.shape)


def _to_tf_layout(array: np.ndarray, transpose: TransposeType, shape: list[int]) -> np.ndarray:
    """tfimm's transposes and rank fixes (`load_pytorch_weights_in_tf2_model`), on numpy."""
    if transpose is TransposeType.CONV2D:
        array = np.transpose(array, axes=(2, 3, 1, 0))
    elif transpose is TransposeType.SIMPLE:
        array = np.transpose(array)
    if len(shape) < array.ndim:
        array = np.squeeze(array)
    elif len(shape) > array.ndim:
        array = np.expand_dims(array, axis=0)
    if list(array.shape) != shape and array.size == int(np.prod(shape)):
        array = np.reshape(array, shape)
    return array


def _normalise_timm_keys(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """TF 'beta'/'gamma' map to timm 'bias'/'weight'; timm layer-scale 'gamma' keys follow."""
    renamed = {}
    for key, value in state.items():
        key = re.sub(r"\.beta$", ".bias", key)
        renamed[re.sub(r"\.gamma$", ".weight", key)] = value
    return renamed


def _classifier_prefixes(model: tf.keras.Model) -> tuple[str, ...]:
    names = getattr(model.cfg, "classifier", None) or ()
    names = [names] if isinstance(names, str) else list(names)
    return tuple(name.replace("/", ".") + "." for name in names)


def assign_timm_state_dict(model: tf.keras.Model, state: dict[str, np.ndarray]) -> None:
    """Sets a built tfimm model's variables from a timm state dict, or raises naming them all.

    Classifier tensors (``cfg.classifier``) and BatchNorm ``num_batches_tracked`` in the file
    are ignored; any other missing, misshapen or unused tensor is an error.

    Args:
        model: a built tfimm model.
        state: timm parameter name -> numpy array.
    """
    state = _normalise_timm_keys(state)
    ignore_missing = getattr(model, "keys_to_ignore_on_load_missing", None) or []
    missing, misshapen, pairs, used = [], [], [], set()
    for variable in model.weights:
        name, transpose = _timm_name(variable)
        if name not in state:
            if not any(re.search(pattern, variable.name) for pattern in ignore_missing):
                missing.append(name)
            continue
        used.add(name)
        shape = variable.shape.as_list()
        array = _to_tf_layout(state[name], transpose, shape)
        if list(array.shape) != shape:
            misshapen.append(f"{name} (file {tuple(state[name].shape)}, model {tuple(shape)})")
            continue
        pairs.append((variable, array))
    skip = _classifier_prefixes(model)
    unused = [
        key
        for key in state
        if key not in used and not key.startswith(skip) and "num_batches_tracked" not in key
    ]
    problems = [
        f"missing from the file {_listing(missing)}" if missing else "",
        f"wrong shape {_listing(misshapen)}" if misshapen else "",
        f"in the file but not in the model {_listing(unused)}" if unused else "",
    ]
    problems = [problem for problem in problems if problem]
    if problems:
        raise ValueError(
            f"timm weights do not fit backbone {model.cfg.name!r}: "
            + "; ".join(problems)
            + ". "
            + _FIX_HINT
        )
    tf.keras.backend.batch_set_value(pairs)


def _from_tf_layout(variable: tf.Variable, transpose: TransposeType) -> np.ndarray:
    array = variable.numpy()
    if transpose is TransposeType.CONV2D:
        if variable.name.endswith("depthwise_kernel:0"):
            # TF (kh, kw, channels, multiplier) is PyTorch (channels * multiplier, 1, kh, kw).
            height, width = array.shape[:2]
            array = array.reshape(height, width, 1, -1)
        return np.transpose(array, axes=(3, 2, 0, 1))
    if transpose is TransposeType.SIMPLE:
        return np.transpose(array)
    return array


def timm_state_dict(model: tf.keras.Model) -> dict[str, np.ndarray]:
    """Returns a tfimm model's weights as a timm state dict (tfimm's mapping in reverse).

    Save it with ``safetensors.numpy.save_file(state, "model.safetensors")`` to load it later
    with ``create_backbone(name, weights="model.safetensors")``.

    Args:
        model: a built tfimm model.
    """
    state = {}
    for variable in model.weights:
        name, transpose = _timm_name(variable)
        state[name] = np.ascontiguousarray(_from_tf_layout(variable, transpose))
    return state


def _load_keras_weights(model: tf.keras.Model, path: str) -> None:
    folder = None
    local = path
    if path.endswith(".h5") and "://" in path:
        # h5py reads local files only: a remote (gs://) .h5 file is copied to a temp folder.
        folder = tempfile.mkdtemp(prefix="kerastricks-weights-")
        local = os.path.join(folder, os.path.basename(path))
        tf.io.gfile.copy(path, local, overwrite=True)
    try:
        status = model.load_weights(local)
        if status is not None and hasattr(status, "assert_existing_objects_matched"):
            status.assert_existing_objects_matched()
    except (ValueError, AssertionError, tf.errors.OpError) as error:
        raise ValueError(
            f"Keras weights file {path} does not fit backbone {model.cfg.name!r}: {error}. "
            + _FIX_HINT
        ) from error
    finally:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)


def _check_exists(path: str) -> None:
    if tf.io.gfile.exists(path) or tf.io.gfile.exists(path + ".index"):
        return
    raise FileNotFoundError(
        f"Backbone weights file not found: {path}. Pass None (random init), 'pretrained', a "
        "timm checkpoint (.safetensors, .pth, .bin) or a Keras weights file (.h5, "
        ".weights.h5, TF checkpoint prefix)."
    )


def load_backbone_weights(
    model: tf.keras.Model,
    path: str,
    default_model: Callable[[], tf.keras.Model] | None = None,
) -> None:
    """Loads a local weights file into a built tfimm backbone, in place.

    Example:

    ```python
    backbone = create_backbone("resnet18")
    load_backbone_weights(backbone, "resnet18.safetensors")
    ```

    Args:
        model: a built tfimm model (e.g. from `create_backbone`).
        path: timm checkpoint (``.safetensors``, ``.pth``, ``.pt``, ``.bin``) or Keras weights
            (``.h5``, ``.weights.h5``, TF checkpoint prefix).
        default_model: builds the model with tfimm's registry config, for which timm
            checkpoints are written. When the file does not fit `model` directly (e.g. a ViT
            built at another image size), it is loaded there and moved over with tfimm's
            `transfer_weights`, which interpolates position embeddings and adapts the first
            convolution to other channel counts.
    """
    _check_exists(path)
    if not path.endswith(TIMM_SUFFIXES):
        _load_keras_weights(model, path)
        return
    state = read_timm_state_dict(path)
    try:
        assign_timm_state_dict(model, state)
    except ValueError as direct_error:
        if default_model is None:
            raise
        source = default_model()
        try:
            assign_timm_state_dict(source, state)
        except ValueError:
            raise direct_error from None
        transfer_weights(source, model)
