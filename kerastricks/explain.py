"""Grad-CAM heatmaps: check that a model looks at the whale, not at the sea around it.

Grad-CAM (Selvaraju et al. 2017) weights each channel of a late 4-D feature map by the
mean gradient of a class logit with respect to it, sums the channels and keeps the
positive part: the image regions that raise that logit.

The feature map is captured while the model runs eagerly, by wrapping the `call` of the
candidate layers for the duration of one forward pass. Unlike building a second
functional model from `layer.output`, this reaches inside nested *subclassed* models
(every tfimm backbone is one, and its inner layers are not graph-connected to the outer
functional model), so one code path serves functional, Sequential and subclassed models.

A model built under a distribution strategy (TPU, MirroredStrategy) is explained the same
way: eagerly, in the cross-replica context, where each mirrored variable reads as its
primary copy, on the default device. `strategy.run` would trace the forward pass into a
per-replica graph (XLA on a TPU) in which the patched `call` records symbolic tensors of one
replica's share, and the heatmaps would then need gathering; for a grid of a few images
that buys nothing.

Example:

```python
heatmaps = grad_cam(model, images)           # [B, H, W] in [0, 1], predicted class
order = save_grad_cam_grid(model, images, labels, class_names, "runs/x/grad_cam.png")
```
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import tensorflow as tf


def grad_cam(
    model: tf.keras.Model,
    images: Any,
    class_index: int | Sequence[int] | np.ndarray | None = None,
    layer: str | tf.keras.layers.Layer | None = None,
    batch_size: int = 32,
) -> np.ndarray:
    """Computes one Grad-CAM heatmap per image, at the input's size, in [0, 1].

    Example:

    ```python
    heatmaps = grad_cam(model, images[:8], class_index=3)
    plt.imshow(images[0] / 255)
    plt.imshow(heatmaps[0], cmap="jet", alpha=0.4)
    ```

    Args:
        model: a Keras model whose single output is `[B, C]` logits (or probabilities).
            Functional, Sequential or subclassed; nested backbones are searched too.
        images: `[B, H, W, C]` in the range the model expects (kerastricks models:
            [0, 255]).
        class_index: the class to explain: `None` for each image's predicted class (the
            argmax of the outputs), an int for all images, or one int per image.
        layer: the layer whose 4-D output is explained, as a name (searched in nested
            models too, e.g. tfimm's `"layer4/1"`) or a layer object. `None` picks the last
            layer run in the forward pass with a 4-D output of more than 1×1 pixels
            (the last 4-D one if all are 1×1): the backbone's final feature map.
        batch_size: images per forward pass.

    Returns:
        float32 `[B, H, W]`; each map is scaled so that its maximum is 1, and a map with
        no positive evidence stays all zeros.

    Raises:
        ValueError: for images that are not 4-D, an unknown or non-4-D `layer`, a model
            without a 4-D feature map, a model with several outputs, or a `class_index`
            out of range; the message names the value.
    """
    images = tf.convert_to_tensor(images, dtype=tf.float32)
    if images.shape.rank != 4:
        raise ValueError(f"images must be [B, H, W, C]; received shape {images.shape}.")
    count = int(images.shape[0])
    classes = _class_array(class_index, count)
    target = _find_layer(model, layer) if layer is not None else None
    batches = []
    for start in range(0, count, batch_size):
        chunk = images[start : start + batch_size]
        chunk_classes = None if classes is None else classes[start : start + batch_size]
        batches.append(_grad_cam_batch(model, chunk, chunk_classes, target))
    size = (int(images.shape[1]), int(images.shape[2]))
    heatmaps = tf.image.resize(tf.concat(batches, axis=0)[..., None], size, method="bilinear")
    heatmaps = heatmaps[..., 0]
    peak = tf.reduce_max(heatmaps, axis=[1, 2], keepdims=True)
    return tf.math.divide_no_nan(heatmaps, peak).numpy()


def _grad_cam_batch(
    model: tf.keras.Model,
    images: tf.Tensor,
    classes: np.ndarray | None,
    target: tf.keras.layers.Layer | None,
) -> tf.Tensor:
    """Un-normalised heatmaps `[B, h, w]` at the feature map's resolution."""
    candidates = [target] if target is not None else _nested_layers(model)
    with tf.GradientTape() as tape, _recording_outputs(candidates) as records:
        logits = model(images, training=False)
        if isinstance(logits, (list, tuple, dict)):
            raise ValueError("grad_cam needs a model with one output [B, C]; this one has several.")
        logits = tf.cast(logits, tf.float32)
        if logits.shape.rank != 2:
            raise ValueError(f"grad_cam needs model outputs [B, C]; received {logits.shape}.")
        chosen = _check_classes(classes, logits)
        score = tf.reduce_sum(tf.gather(logits, chosen, axis=1, batch_dims=1))
    name, feature_map = _pick_feature_map(records, target)
    gradient = tape.gradient(score, feature_map)
    if gradient is None:
        raise ValueError(
            f"The output of layer {name!r} does not reach the model's logits; pass another "
            "`layer` (a 4-D feature map on the path to the output)."
        )
    feature_map = tf.cast(feature_map, tf.float32)
    channel_weights = tf.reduce_mean(tf.cast(gradient, tf.float32), axis=[1, 2], keepdims=True)
    return tf.nn.relu(tf.reduce_sum(channel_weights * feature_map, axis=-1))


@contextlib.contextmanager
def _recording_outputs(layers: list[tf.keras.layers.Layer]) -> Iterator[list]:
    """Records `(layer name, output)` of every call of `layers`, in completion order.

    Keras 2 has no forward hooks, so an instance attribute shadows each layer's `call`
    for the duration of the block; `Layer.__call__` looks `self.call` up at every eager call.
    """
    records: list[tuple[str, Any]] = []
    patched = []

    def wrap(layer: tf.keras.layers.Layer, original: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            outputs = original(*args, **kwargs)
            records.append((layer.name, outputs))
            return outputs

        return call

    try:
        for layer in layers:
            layer.call = wrap(layer, layer.call)
            patched.append(layer)
        yield records
    finally:
        for layer in patched:
            del layer.call


def _pick_feature_map(records: list, target: tf.keras.layers.Layer | None) -> tuple[str, Any]:
    maps = [(name, out) for name, out in records if tf.is_tensor(out) and out.shape.rank == 4]
    if target is not None:
        if not maps:
            shapes = [getattr(out, "shape", type(out).__name__) for _, out in records]
            raise ValueError(
                f"Layer {target.name!r} has no 4-D output (got {shapes or 'no call'}); "
                "pass a convolutional layer (e.g. the backbone's last block)."
            )
        return maps[-1]
    if not maps:
        raise ValueError(
            "No layer of the model produced a 4-D feature map in the forward pass; "
            "Grad-CAM needs a convolutional model (or pass `layer`)."
        )
    wide = [(name, out) for name, out in maps if out.shape[1] * out.shape[2] > 1]
    return (wide or maps)[-1]


def _nested_layers(model: tf.keras.Model) -> list[tf.keras.layers.Layer]:
    layers = [m for m in model.submodules if isinstance(m, tf.keras.layers.Layer)]
    unique = {id(layer): layer for layer in layers}
    return list(unique.values())


def _find_layer(model: tf.keras.Model, layer: str | tf.keras.layers.Layer) -> Any:
    layers = _nested_layers(model)
    if isinstance(layer, tf.keras.layers.Layer):
        if not any(candidate is layer for candidate in layers):
            raise ValueError(f"Layer {layer.name!r} is not part of model {model.name!r}.")
        return layer
    matches = [candidate for candidate in layers if candidate.name == layer]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise ValueError(
            f"{len(matches)} nested layers are named {layer!r}; pass the layer object instead."
        )
    four_d = [c.name for c in layers if isinstance(c, tf.keras.layers.Conv2D)][-5:]
    raise ValueError(
        f"No layer named {layer!r} in model {model.name!r} (nested models searched); "
        f"its last convolution layers are {four_d}."
    )


def _class_array(class_index: Any, count: int) -> np.ndarray | None:
    if class_index is None:
        return None
    values = np.asarray(class_index)
    if values.ndim == 0:
        values = np.full(count, values)
    if values.shape != (count,) or not np.issubdtype(values.dtype, np.integer):
        raise ValueError(
            f"class_index must be an int or one int per image ({count}); received {class_index!r}."
        )
    return values.astype(np.int64)


def _check_classes(classes: np.ndarray | None, logits: tf.Tensor) -> tf.Tensor:
    if classes is None:
        return tf.argmax(logits, axis=-1)
    num_classes = int(logits.shape[-1])
    if np.any(classes < 0) or np.any(classes >= num_classes):
        raise ValueError(
            f"class_index {classes.tolist()} out of range for a model with {num_classes} outputs."
        )
    return tf.constant(classes)


def save_grad_cam_grid(
    model: tf.keras.Model,
    images: Any,
    labels: Any,
    class_names: Sequence[str],
    path: str,
    max_images: int = 16,
    probabilities: Any = None,
    layer: str | tf.keras.layers.Layer | None = None,
) -> np.ndarray:
    """Writes a PNG grid of images with their Grad-CAM heatmaps, confident mistakes first.

    Each panel shows an image, the heatmap of its predicted class overlaid, and a title
    with the true label, the predicted one and its probability (red for a mistake). The
    most confident mistakes come first (what the model believes wrongly, often a
    background shortcut), then the other images in their given order.

    Example:

    ```python
    order = save_grad_cam_grid(model, images, labels, ["cat", "dog"], "runs/x/grad_cam.png")
    ```

    Args:
        model: the classifier (see `grad_cam`).
        images: `[N, H, W, C]` in the model's input range; shown as [0, 255] RGB (or
            [0, 1] when no value exceeds 1).
        labels: the true classes, as indices `[N]` or one-hot/soft `[N, C]`; `None` when
            unknown (then no image counts as a mistake).
        class_names: one name per class.
        path: the PNG to write (local or `gs://`), written to a temporary name and renamed.
        max_images: the most panels to draw.
        probabilities: `[N, C]` predicted probabilities (e.g. with TTA); `None` runs the
            model and applies a softmax (single-label classifiers).
        layer: passed to `grad_cam`.

    Returns:
        The indices into `images` of the panels drawn, in grid order.
    """
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4:
        raise ValueError(f"images must be [N, H, W, C]; received shape {images.shape}.")
    true = _label_indices(labels, len(images), len(class_names))
    if probabilities is None:
        # Eager calls, like grad_cam's: `model.predict` on a strategy-built model would trace
        # (on a TPU, compile) a distributed function for these few images and a partial batch.
        logits = [
            tf.cast(model(images[start : start + 32], training=False), tf.float32)
            for start in range(0, len(images), 32)
        ]
        probabilities = tf.nn.softmax(tf.concat(logits, axis=0), axis=-1).numpy()
    probabilities = np.asarray(probabilities, dtype=np.float64)
    _check_grid_inputs(images, probabilities, class_names)
    predicted = probabilities.argmax(axis=1)
    order = _mistakes_first(true, predicted, probabilities.max(axis=1))[:max_images]
    heatmaps = grad_cam(model, images[order], class_index=predicted[order], layer=layer)
    panels = [_panel_title(true, predicted, probabilities, class_names, index) for index in order]
    _draw_grid(images[order], heatmaps, panels, path)
    return order


def _check_grid_inputs(
    images: np.ndarray, probabilities: np.ndarray, class_names: Sequence[str]
) -> None:
    if probabilities.shape != (len(images), len(class_names)):
        raise ValueError(
            f"probabilities must be [N, C] = [{len(images)}, {len(class_names)}] (one row per "
            f"image, one column per class name); received {probabilities.shape}."
        )


def _label_indices(labels: Any, count: int, num_classes: int) -> np.ndarray | None:
    if labels is None:
        return None
    labels = np.asarray(labels)
    indices = labels.argmax(axis=1) if labels.ndim == 2 else labels.astype(np.int64)
    if indices.shape != (count,):
        raise ValueError(f"labels must hold one label per image ({count}); got {labels.shape}.")
    if np.any(indices < 0) or np.any(indices >= num_classes):
        raise ValueError(
            f"labels must be class indices in [0, {num_classes}) (one per class name); "
            f"got values from {indices.min()} to {indices.max()}."
        )
    return indices


def _mistakes_first(
    true: np.ndarray | None, predicted: np.ndarray, confidence: np.ndarray
) -> np.ndarray:
    """Indices: mistakes by decreasing confidence, then the rest in their given order."""
    if true is None:
        return np.arange(len(predicted))
    wrong = np.flatnonzero(true != predicted)
    wrong = wrong[np.argsort(-confidence[wrong], kind="stable")]
    right = np.flatnonzero(true == predicted)
    return np.concatenate([wrong, right]).astype(np.int64)


def _panel_title(
    true: np.ndarray | None,
    predicted: np.ndarray,
    probabilities: np.ndarray,
    class_names: Sequence[str],
    index: int,
) -> tuple[str, bool]:
    guess = predicted[index]
    line = f"pred: {class_names[guess]} ({probabilities[index, guess]:.0%})"
    if true is None:
        return line, False
    return f"true: {class_names[true[index]]}\n{line}", bool(true[index] != guess)


def _draw_grid(
    images: np.ndarray, heatmaps: np.ndarray, panels: list[tuple[str, bool]], path: str
) -> None:
    from kerastricks.plots import new_figure, save_figure

    columns = max(1, int(np.ceil(np.sqrt(len(images)))))
    rows = max(1, int(np.ceil(len(images) / columns)))
    figure = new_figure(2.4 * columns, 2.7 * rows)
    scale = 255.0 if images.max(initial=0.0) > 1.0 else 1.0
    for slot, (image, heatmap, (title, mistake)) in enumerate(
        zip(images, heatmaps, panels, strict=True)
    ):
        axis = figure.add_subplot(rows, columns, slot + 1)
        shown = np.clip(image / scale, 0.0, 1.0)
        if shown.shape[-1] == 1:
            axis.imshow(shown[..., 0], cmap="gray", vmin=0.0, vmax=1.0)
        else:
            axis.imshow(shown[..., :3])
        axis.imshow(heatmap, cmap="jet", alpha=0.4, vmin=0.0, vmax=1.0)
        axis.set_title(title, fontsize=8, color="red" if mistake else "black")
        axis.axis("off")
    save_figure(figure, path)
