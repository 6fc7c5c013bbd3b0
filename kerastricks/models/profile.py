"""Time candidate backbones on this machine before a long run (train and infer images/s)."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import tensorflow as tf

import kerastricks  # noqa: F401  (selects tf-keras before TensorFlow is imported)
from kerastricks.models.backbones import resolve_backbone_name
from kerastricks.models.head import build_classifier

PROFILE_CLASSES = 10


def _images_per_second(step, batch_size: int, steps: int, warmup: int) -> float:
    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch_size / (time.perf_counter() - start)


def _profile_one(name: str, image_size: int, batch_size: int, steps: int, warmup: int) -> dict:
    model = build_classifier(name, PROFILE_CLASSES, input_size=image_size)
    model.compile(
        optimizer=tf.keras.optimizers.Adam(1e-4),
        loss=tf.keras.losses.CategoricalCrossentropy(from_logits=True),
    )
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (batch_size, image_size, image_size, 3)).astype("float32")
    labels = np.eye(PROFILE_CLASSES, dtype="float32")[rng.integers(0, PROFILE_CLASSES, batch_size)]
    images, labels = tf.constant(images), tf.constant(labels)
    predict = tf.function(lambda batch: model(batch, training=False))

    def train_step() -> None:
        # .numpy() waits for the step to finish, so the clock measures the work.
        model.train_on_batch(images, labels)

    def infer_step() -> None:
        predict(images).numpy()

    return {
        "backbone": name,
        "params": int(model.count_params()),
        "train_img_per_s": _images_per_second(train_step, batch_size, steps, warmup),
        "infer_img_per_s": _images_per_second(infer_step, batch_size, steps, warmup),
    }


def profile_backbones(
    names: list[str] | str,
    image_size: int = 64,
    batch_size: int = 16,
    steps: int = 5,
    warmup: int = 2,
    verbose: bool = True,
) -> pd.DataFrame:
    """Times training and inference of each backbone (random weights, synthetic data).

    Each backbone gets `build_classifier` with a 10-class head; warm-up steps (graph tracing)
    are not timed. Slow choices show here, before a long run: depthwise convolutions, for
    one, are much slower per FLOP than dense ones on some hardware (the seeds' lesson).

    Example:

    ```python
    table = profile_backbones(["resnet18", "efficientnet_b0"], image_size=64)
    ```

    Args:
        names: tfimm model names (a list, or one comma-separated string).
        image_size: square image size in pixels.
        batch_size: images per step.
        steps: timed steps per measurement.
        warmup: untimed steps before each measurement.
        verbose: print a line per backbone while it is timed, then the table.

    Returns:
        A DataFrame with columns backbone, params, train_img_per_s, infer_img_per_s.
    """
    if isinstance(names, str):
        names = [name.strip() for name in names.split(",") if name.strip()]
    names = [resolve_backbone_name(name) for name in names]  # all checked before any timing
    for label, value in (("image_size", image_size), ("batch_size", batch_size), ("steps", steps)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{label} must be a positive int; received {value!r}.")
    if not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup must be an int >= 0; received {warmup!r}.")
    rows = []
    for number, name in enumerate(names, start=1):
        if verbose:
            # Building and tracing take seconds to minutes per backbone: say what is running.
            print(
                f"profile [{number}/{len(names)}] {name}: building, then {warmup} warm-up and "
                f"{steps} timed steps of {batch_size} images at {image_size}px ...",
                flush=True,
            )
        row = _profile_one(name, image_size, batch_size, steps, warmup)
        rows.append(row)
        tf.keras.backend.clear_session()
        if verbose:
            print(
                f"profile [{number}/{len(names)}] {name}: train {row['train_img_per_s']:.1f} "
                f"img/s, infer {row['infer_img_per_s']:.1f} img/s",
                flush=True,
            )
    table = pd.DataFrame(rows, columns=["backbone", "params", "train_img_per_s", "infer_img_per_s"])
    if verbose:
        print(table.to_string(index=False, float_format=lambda value: f"{value:.1f}"))
    return table
