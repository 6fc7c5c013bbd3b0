"""A plain Keras model (no tfimm) trained by `fit_stages` on in-memory data, in this process
or a fresh one (tests/train/test_fit_stages.py).

Usage: python _fit_stages_worker.py kill RUN_DIR OUT EPOCHS    (SIGKILL after EPOCHS epochs)
       python _fit_stages_worker.py mirrored OUT               (2 logical CPUs vs 1 device)
"""

import json
import os
import signal
import sys

import numpy as np
import tensorflow as tf

import kerastricks  # noqa: F401

SIZES = (16, 24)
STEPS_PER_EPOCH = 3  # of 6 batches: each stage reads one stream through its epochs
BATCH = 8


def stages():
    from kerastricks.fit import Stage

    return [
        Stage(name="head", epochs=2, image_size=SIZES[0], unfreeze="head", lr=3e-3),
        Stage(
            name="all",
            epochs=2,
            image_size=SIZES[1],
            unfreeze="all",
            lr=1e-3,
            lr_mult={"slice": [1e-5, 1e-3]},
        ),
    ]


def images_and_labels(count=48):
    """Three classes of noise images, each brighter in its own channel."""
    rng = np.random.default_rng(0)
    labels = np.arange(count) % 3
    images = rng.uniform(0, 128, size=(count, 32, 32, 3)).astype("float32")
    images[np.arange(count), :, :, labels] += 100.0
    return images, np.eye(3, dtype="float32")[labels]


def datasets(image_size):
    """Deterministic batches at `image_size`: the same order in every process."""
    images, labels = images_and_labels()
    resized = tf.image.resize(images, (image_size, image_size)).numpy()
    train = tf.data.Dataset.from_tensor_slices((resized, labels)).batch(BATCH)
    val = tf.data.Dataset.from_tensor_slices((resized[:16], labels[:16])).batch(BATCH)
    return train, val


def make_model(norm="batch"):
    """Conv -> norm -> dense head: three layer groups, any image size."""
    tf.keras.utils.set_random_seed(0)
    norm_layer = (
        tf.keras.layers.BatchNormalization(name="norm")
        if norm == "batch"
        else tf.keras.layers.LayerNormalization(name="norm")
    )
    return tf.keras.Sequential(
        [
            tf.keras.Input((None, None, 3)),
            tf.keras.layers.Rescaling(1 / 255.0),
            tf.keras.layers.Conv2D(8, 3, name="conv"),
            norm_layer,
            tf.keras.layers.ReLU(),
            tf.keras.layers.GlobalAveragePooling2D(),
            tf.keras.layers.Dense(3, name="head"),
        ]
    )


def fit(run_dir=None, strategy=None, norm="batch", **kwargs):
    from kerastricks.fit import fit_stages

    return fit_stages(
        lambda: make_model(norm),
        stages(),
        datasets,
        loss=tf.keras.losses.CategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        steps_per_epoch=STEPS_PER_EPOCH,
        run_dir=run_dir,
        strategy=strategy,
        verbose=0,
        **kwargs,
    )


def state_of(history):
    """Weights, optimizer variables and step counter of a finished run."""
    model = history.model
    arrays = {f"weight/{i}/{v.name}": v.numpy() for i, v in enumerate(model.weights)}
    optimizer = getattr(model.optimizer, "inner_optimizer", model.optimizer)
    arrays.update({f"optimizer/{i}": v.numpy() for i, v in enumerate(optimizer.variables)})
    arrays["steps"] = np.array(history.steps)
    return arrays


def kill_after(epochs):
    from kerastricks.train import epoch_callbacks

    on_epoch_end = epoch_callbacks.EpochRecorder.on_epoch_end

    def on_epoch_end_then_kill(self, epoch, logs=None):
        on_epoch_end(self, epoch, logs)
        if len(self.state["rows"]) == epochs:
            os.kill(os.getpid(), signal.SIGKILL)

    epoch_callbacks.EpochRecorder.on_epoch_end = on_epoch_end_then_kill


def mirrored(out):
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    # LayerNorm: per sample, so 2 replicas of 4 train as 1 device of 8 (BatchNorm would not).
    single = fit(norm="layer")
    history = fit(strategy=strategy, norm="layer")
    differing, replicated = [], 0
    for variable in history.model.trainable_weights:
        values = getattr(variable, "values", None) or []
        replicated += len(values) > 1
        if any(not np.array_equal(values[0].numpy(), v.numpy()) for v in values[1:]):
            differing.append(variable.name)
    report = {
        "replicas": strategy.num_replicas_in_sync,
        "replicated": replicated,
        "differing": differing,
        "steps": history.steps,
        "image_size": history.history["image_size"],
        "loss": history.history["loss"],
        "single_loss": single.history["loss"],
        "max_weight_difference": max(
            float(np.abs(a.numpy() - b.numpy()).max())
            for a, b in zip(history.model.weights, single.model.weights, strict=True)
        ),
    }
    with open(out, "w") as f:
        json.dump(report, f)


def main():
    mode = sys.argv[1]
    if mode == "mirrored":
        mirrored(sys.argv[2])
        return
    run_dir, out, epochs = sys.argv[2], sys.argv[3], int(sys.argv[4])
    kill_after(epochs)
    np.savez(out, **state_of(fit(run_dir)))


if __name__ == "__main__":
    main()
