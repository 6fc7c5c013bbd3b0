"""Step time of AdamW with per-group LR multipliers vs plain AdamW, in one run.

Trains two copies of a small tfimm CNN (random init) on random data with a compiled
`tf.function` train step; timing blocks alternate between the two (order flipped each
round) after both are warmed up, and the medians are compared. Goal: ratio <= 1.10.

    .venv/bin/python benchmarks/lr_multipliers.py --model resnet18 --size 64 --batch 32

The last line printed is one JSON object with both step times and the ratio.
"""

from __future__ import annotations

import kerastricks  # noqa: F401  (selects tf-keras before TensorFlow is imported)

# isort: split
import argparse
import json
import statistics
import time

import numpy as np
import tensorflow as tf
import tfimm

from kerastricks.optim import spread_lrs, with_lr_multipliers

GROUPS = 4


def make_trainer(
    model_name: str, size: int, multipliers: list[float] | None, jit: bool, rescale: bool = False
):
    """Returns (train_step, model) for a fresh model with AdamW, multiplier-aware or not."""
    tf.keras.utils.set_random_seed(0)
    model = tfimm.create_model(model_name, nb_classes=10)
    model(tf.zeros((1, size, size, 3)))
    optimizer = tf.keras.optimizers.AdamW(1e-3, weight_decay=0.05)
    if multipliers is not None:
        variables = model.trainable_variables
        chunks = np.array_split(np.arange(len(variables)), GROUPS)
        groups = [[variables[i] for i in chunk] for chunk in chunks]
        optimizer = with_lr_multipliers(optimizer, groups, multipliers)
        if rescale:
            # The path used for optimizers not known to be linear in the learning rate.
            optimizer._lr_scales_step = False
    loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function(jit_compile=jit)
    def train_step(images, labels):
        with tf.GradientTape() as tape:
            loss = loss_fn(labels, model(images, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return loss

    return train_step, model


def time_block(step, images, labels, steps: int) -> float:
    """Seconds per step over `steps` steps (the last loss is read to wait for the device)."""
    start = time.perf_counter()
    for _ in range(steps):
        loss = step(images, labels)
    float(loss)
    return (time.perf_counter() - start) / steps


def main() -> None:
    """Runs the interleaved benchmark and prints the table and the JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5, help="steps per timing block")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--jit", action="store_true", help="XLA-compile the train step")
    parser.add_argument(
        "--rescale",
        action="store_true",
        help="time the snapshot-and-rescale path (any optimizer) instead of AdamW's free one",
    )
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    images = tf.constant(rng.uniform(0, 255, (args.batch, args.size, args.size, 3)), tf.float32)
    labels = tf.constant(rng.integers(0, 10, args.batch))
    multipliers = spread_lrs(GROUPS, {"slice": [1e-5, 1e-3]})
    steps = {
        "adamw": make_trainer(args.model, args.size, None, args.jit)[0],
        "adamw+multipliers": make_trainer(
            args.model, args.size, multipliers, args.jit, args.rescale
        )[0],
    }
    for step in steps.values():
        time_block(step, images, labels, args.warmup)
    times: dict[str, list[float]] = {name: [] for name in steps}
    for round_index in range(args.rounds):
        order = list(steps) if round_index % 2 == 0 else list(reversed(steps))
        for name in order:
            times[name].append(time_block(steps[name], images, labels, args.steps))

    medians = {name: statistics.median(values) for name, values in times.items()}
    ratio = medians["adamw+multipliers"] / medians["adamw"]
    path = "snapshot-and-rescale" if args.rescale else "scaled learning rate"
    print(f"{args.model} {args.size}px batch {args.batch}, {GROUPS} groups, {path}")
    print(f"multipliers {[round(m, 4) for m in multipliers]}")
    print(f"{'optimizer':<20} {'median ms/step':>15} {'min':>8} {'max':>8}")
    for name, values in times.items():
        print(
            f"{name:<20} {1000 * medians[name]:>15.1f} {1000 * min(values):>8.1f}"
            f" {1000 * max(values):>8.1f}"
        )
    print(f"ratio {ratio:.3f} (goal <= 1.10)")
    print(
        json.dumps(
            {
                "model": args.model,
                "image_size": args.size,
                "batch": args.batch,
                "device": "GPU" if tf.config.list_physical_devices("GPU") else "CPU",
                "jit": args.jit,
                "path": "rescale" if args.rescale else "learning_rate",
                "adamw_step_s": round(medians["adamw"], 5),
                "multipliers_step_s": round(medians["adamw+multipliers"], 5),
                "ratio": round(ratio, 4),
            }
        )
    )


if __name__ == "__main__":
    main()
