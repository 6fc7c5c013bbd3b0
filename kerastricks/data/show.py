"""A PNG grid of one augmented training batch, to see what the model will see."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from kerastricks.data.augment import AugmentPipeline
from kerastricks.data.reader import resolve_records


def _title(label: np.ndarray, class_names: Sequence[str]) -> str:
    """A grid title: the class of a one-hot label, the classes of a multi-hot one, and for a
    soft label (MixUp, CutMix, pseudo-labels) the two leading classes with their weights."""
    label = np.asarray(label, dtype=np.float64)

    def name(index: int) -> str:
        return class_names[index] if index < len(class_names) else str(index)

    order = np.argsort(-label, kind="stable")
    top = int(order[0])
    hard = np.all(np.isclose(label, 0.0, atol=1e-6) | np.isclose(label, 1.0, atol=1e-6))
    if hard:
        positives = [int(i) for i in np.flatnonzero(label > 0.5)] or [top]
        return ", ".join(name(i) for i in positives)
    shown = [top]
    if len(label) > 1:
        second = int(order[1])
        third = float(label[order[2]]) if len(label) > 2 else 0.0
        # A mix of two images puts more weight on its second class than on the rest; label
        # smoothing alone spreads one equal floor over all other classes, so there the
        # second class is no more than the third and only the top one is named.
        if label[second] > third + 1e-6:
            shown.append(second)
    return " / ".join(f"{name(i)} {label[i]:.2f}" for i in shown)


def save_batch_grid(
    images: Any,
    labels: Any,
    class_names: Sequence[str],
    path: str,
    max_images: int = 32,
) -> str:
    """Writes a PNG grid of images in [0, 255] titled by their labels; returns `path`.

    Written through `tf.io.gfile` to a temporary name, then renamed, so a reader never sees
    half a file (and `gs://` paths work).

    Args:
        images: `[B, H, W, 3]` array or tensor in [0, 255].
        labels: `[B, C]` one-hot, multi-hot or soft labels.
        class_names: names of the C classes ([] shows indices).
        path: PNG file to write.
        max_images: at most this many images are drawn.
    """
    from kerastricks.plots import new_figure, save_figure

    images = np.asarray(images)[:max_images]
    labels = np.asarray(labels)[:max_images]
    if images.ndim != 4 or len(images) == 0:
        raise ValueError(f"images must be a non-empty [B, H, W, 3] batch. Got shape {images.shape}")
    columns = min(8, len(images))
    rows = math.ceil(len(images) / columns)
    figure = new_figure(2 * columns, 2.2 * rows)
    axes = figure.subplots(rows, columns, squeeze=False)
    for index, axis in enumerate(axes.flat):
        axis.axis("off")
        if index < len(images):
            axis.imshow(np.clip(images[index], 0, 255).astype(np.uint8))
            axis.set_title(_title(labels[index], class_names), fontsize=8)
    return save_figure(figure, path)


def show_batch(
    records: str | Sequence[str],
    image_size: int | tuple[int, int],
    augment: Sequence[Mapping[str, Any] | str] | AugmentPipeline | None,
    path: str,
    *,
    batch_size: int = 32,
    seed: int | None = 0,
    resize: str | None = None,
    folds: Sequence[int] | None = None,
    keys: Mapping[str, Any] | None = None,
    num_classes: int | None = None,
    max_images: int = 32,
) -> str:
    """Builds the training pipeline and writes its first augmented batch as a PNG grid.

    What `kerastricks show-batch CONFIG --out grid.png` calls. Returns `path`.
    """
    from kerastricks.data.pipeline import build_dataset

    source = resolve_records(records, keys, num_classes=num_classes)
    batch_size = min(batch_size, source.count(folds))
    dataset = build_dataset(
        source,
        image_size,
        batch_size,
        training=True,
        augment=augment,
        seed=seed,
        folds=folds,
        resize=resize,
    )
    images, labels = next(iter(dataset))
    return save_batch_grid(images, labels, source.class_names, path, max_images)
