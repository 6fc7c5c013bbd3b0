"""Test-time augmentation: named deterministic transforms and fastai's blend.

fastai `tta(n=4, beta=0.25)` averages augmented passes and blends them with the plain
prediction: final = (1 - beta) * mean(augmented) + beta * plain. Our transforms are named and
deterministic (`identity`, `hflip`, `vflip`, `rot90`, `rot180`, `rot270`, `scale1.15`), so a
prediction is reproducible and each pass is one XLA-compilable op. `predict_tta` splits every
batch over the replicas of the model's strategy (TPU cores, GPUs).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf

from kerastricks.config.names import TTA_TRANSFORMS, check_tta_transform, tta_scale_factor


def _rotate(k: int) -> Callable[[tf.Tensor], tf.Tensor]:
    return lambda images: tf.image.rot90(images, k=k)


TRANSFORMS: dict[str, Callable[[tf.Tensor], tf.Tensor]] = {
    "identity": lambda images: images,
    "hflip": tf.image.flip_left_right,
    "vflip": tf.image.flip_up_down,
    "rot90": _rotate(1),
    "rot180": _rotate(2),
    "rot270": _rotate(3),
}
# The names live in kerastricks.config.names, where the config checks them without TensorFlow.
assert tuple(TRANSFORMS) == TTA_TRANSFORMS


def list_tta_transforms() -> list[str]:
    """Names accepted in `tta.transforms` (plus `scale<F>`, e.g. `scale1.15`)."""
    return [*TTA_TRANSFORMS, "scale<factor>"]


def get_tta_transform(name: str) -> Callable[[tf.Tensor], tf.Tensor]:
    """The batch transform for a name; `scaleF` zooms in by F (centre crop, resize back)."""
    check_tta_transform(name)
    if name in TRANSFORMS:
        return TRANSFORMS[name]
    factor = tta_scale_factor(name)
    return lambda images: _zoom(images, factor)


def _zoom(images: tf.Tensor, factor: float) -> tf.Tensor:
    height, width = images.shape[1], images.shape[2]
    if factor >= 1.0:
        cropped = tf.image.central_crop(images, 1.0 / factor)
        return tf.image.resize(cropped, (height, width))
    # Zooming out pads with the edge-free zero border, as a smaller view of the whole image.
    small = tf.image.resize(images, (round(height * factor), round(width * factor)))
    return tf.image.resize_with_crop_or_pad(small, height, width)


def blend_tta(plain: np.ndarray, augmented: Sequence[np.ndarray], beta: float | None) -> np.ndarray:
    """fastai's TTA blend: (1 - beta) * mean(augmented) + beta * plain; with `beta=None`,
    the plain mean over every pass (plain included)."""
    if not augmented:
        return plain
    mean_augmented = np.mean(np.stack(augmented), axis=0)
    if beta is None:
        return (plain + mean_augmented * len(augmented)) / (len(augmented) + 1)
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"tta.beta: expected a value in [0, 1], got {beta}")
    return (1.0 - beta) * mean_augmented + beta * plain


def to_probabilities(outputs: np.ndarray, task: str) -> np.ndarray:
    """Logits to probabilities: softmax (single-label), sigmoid (multi-label), identity
    (regression)."""
    outputs = np.asarray(outputs, dtype=np.float64)
    if task == "single_label":
        shifted = outputs - outputs.max(axis=1, keepdims=True)
        exp = np.exp(shifted)
        return exp / exp.sum(axis=1, keepdims=True)
    if task == "multi_label":
        return 1.0 / (1.0 + np.exp(-outputs))
    return outputs


def predict_tta(
    model: tf.keras.Model,
    dataset: tf.data.Dataset,
    transforms: Sequence[str],
    task: str,
    beta: float | None = None,
    *,
    strategy: tf.distribute.Strategy | None = None,
    batch_size: int | None = None,
    steps: int | None = None,
    verbose: int = 0,
    jit_compile: bool = False,
) -> dict[str, np.ndarray]:
    """Predicts a batched `(images, labels, ids)` dataset once per transform; returns `plain`
    (identity) and `tta` (blended) probabilities, `targets` and `ids`, in dataset order.

    Example:

    ```python
    with strategy.scope():
        model = build_model(config, num_classes, 224)
    result = predict_tta(model, dataset, ["hflip", "scale1.15"], "single_label", 0.25,
                         strategy=strategy, batch_size=64 * strategy.num_replicas_in_sync)
    ```

    Args:
        model: the classifier (raw pixels in, logits out).
        dataset: batched `(images, labels, ids)`; a partial last batch is fine.
        transforms: TTA transform names (`identity` is always the plain pass).
        task: `single_label`, `multi_label` or `regression` (how logits become
            probabilities).
        beta: fastai's blend weight of the plain pass (None: the mean of every pass).
        strategy: the strategy that built `model` (None: `model.distribute_strategy`);
            every batch is split over its replicas.
        batch_size: the global batch of one step (per-replica batch x replicas); None: the
            dataset's batch, rounded up to a multiple of the replicas.
        steps: batches at `batch_size`, for the progress bar (None: unknown).
        verbose: 0 silent, 1 a progress bar over batches, 2 one line at the end.
        jit_compile: compile the per-replica forward pass with XLA (always on for a TPU).
    """
    from kerastricks.eval.distributed import predict_distributed

    if strategy is None:
        strategy = model.distribute_strategy
    names = list(dict.fromkeys(["identity", *transforms]))
    fns = [get_tta_transform(n) for n in names]

    def forward(images: tf.Tensor) -> tf.Tensor:
        # One [b, passes, C] tensor: one transfer back to the host per step.
        passes = [tf.cast(model(fn(images), training=False), tf.float32) for fn in fns]
        return tf.stack(passes, axis=1)

    if batch_size is None:
        batch_size = _rounded_batch(dataset, strategy.num_replicas_in_sync)
    outputs, (targets, ids) = predict_distributed(
        forward,
        dataset,
        strategy,
        batch_size,
        steps=steps,
        verbose=verbose,
        jit_compile=jit_compile,
    )
    probabilities = [to_probabilities(outputs[:, i], task) for i in range(len(names))]
    plain = probabilities[0]
    tta = blend_tta(plain, probabilities[1:], beta)
    return {
        "plain": plain,
        "tta": tta,
        "targets": targets,
        "ids": np.array([i.decode() for i in ids]),
    }


def _rounded_batch(dataset: tf.data.Dataset, replicas: int) -> int:
    """The dataset's batch (static, else its first batch's), rounded up to whole replicas."""
    rows = tf.nest.flatten(dataset.element_spec)[0].shape[0]
    if rows is None:
        first = next(iter(dataset.take(1)), None)
        rows = 1 if first is None else int(tf.shape(tf.nest.flatten(first)[0])[0])
    return -(-rows // replicas) * replicas
