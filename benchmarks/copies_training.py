"""Does training at 64 px from stored copies reach the accuracy of training from the images?

Cuts scikit-learn's two sample photos into 8 classes (each photo's four quadrants; an image is
a random square crop of one quadrant, flipped at random, saved as a 256 px JPEG), writes the
same 1,000 images as records twice, without and with copies (`--sizes 96,128`), and trains the
same small CNN at 64 px with random-resized-crop + flip on folds 1-4 of each, validating on
fold 0 (squash, 64 px). The runs alternate between the two record sets, seed by seed. Prints
the validation accuracy of each run, the mean and spread of each set, and as the last line one
JSON object. Data is written to benchmarks/_data/copies_training/ on the first run.

    .venv/bin/python benchmarks/copies_training.py [--seeds 3] [--epochs 6]
"""

from __future__ import annotations

import kerastricks  # noqa: F401  (selects tf-keras before TensorFlow is imported)

# isort: split
import argparse
import json
import pathlib
import statistics
import time

import numpy as np
import pandas as pd
import tensorflow as tf
from PIL import Image
from sklearn.datasets import load_sample_images

from kerastricks.data import build_dataset

DATA = pathlib.Path(__file__).parent / "_data" / "copies_training"
PER_CLASS = 125
SIDE = 256
SIZE = 64
COPY_SIZES = [96, 128]
BATCH = 32
AUGMENT = [{"name": "RandomFlip", "mode": "horizontal"}]


def write_data() -> None:
    """The images, their CSV and both record sets (kept between runs)."""
    from tfrecords_tools import write_records

    if (DATA / "copies" / "manifest.json").exists():
        return
    (DATA / "img").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows = []
    for which, photo in enumerate(load_sample_images().images):
        half_h, half_w = photo.shape[0] // 2, photo.shape[1] // 2
        for quadrant in range(4):
            top, left = (quadrant // 2) * half_h, (quadrant % 2) * half_w
            region = photo[top : top + half_h, left : left + half_w]
            for index in range(PER_CLASS):
                side = int(rng.integers(96, min(region.shape[:2]) + 1))
                y = int(rng.integers(0, region.shape[0] - side + 1))
                x = int(rng.integers(0, region.shape[1] - side + 1))
                crop = Image.fromarray(region[y : y + side, x : x + side])
                if rng.random() < 0.5:
                    crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
                path = f"img/{which}{quadrant}_{index:03d}.jpg"
                crop.resize((SIDE, SIDE), Image.Resampling.BICUBIC).save(DATA / path, quality=90)
                rows.append({"path": path, "label": f"photo{which}_q{quadrant}"})
    pd.DataFrame(rows).to_csv(DATA / "images.csv", index=False)
    options = {"csv": str(DATA / "images.csv"), "folds": 5, "progress": False}
    write_records(str(DATA / "plain"), **options)
    write_records(str(DATA / "copies"), sizes=COPY_SIZES, **options)


def small_cnn(classes: int) -> tf.keras.Model:
    layers = [tf.keras.layers.Rescaling(1 / 255.0, input_shape=(SIZE, SIZE, 3))]
    for filters in (32, 64, 128):
        layers += [
            tf.keras.layers.Conv2D(filters, 3, strides=2, padding="same", use_bias=False),
            # Short runs (150 steps): the default momentum 0.99 leaves the moving statistics
            # near their initial values, and validation at chance.
            tf.keras.layers.BatchNormalization(momentum=0.9),
            tf.keras.layers.ReLU(),
        ]
    layers += [tf.keras.layers.GlobalAveragePooling2D(), tf.keras.layers.Dense(classes)]
    return tf.keras.Sequential(layers)


def train(records: str, seed: int, epochs: int) -> float:
    """Validation accuracy on fold 0 after `epochs` epochs on folds 1-4."""
    tf.keras.utils.set_random_seed(seed)
    train_set = build_dataset(
        records,
        SIZE,
        BATCH,
        True,
        AUGMENT,
        seed=seed,
        exclude_folds=[0],
        resize="random_resized_crop",
    )
    val_set = build_dataset(records, SIZE, 100, False, folds=[0])
    model = small_cnn(8)
    model.compile(
        tf.keras.optimizers.Adam(3e-3),
        tf.keras.losses.CategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(train_set, epochs=epochs, verbose=0)
    return float(model.evaluate(val_set, verbose=0)[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=6)
    args = parser.parse_args()
    write_data()
    runs = {"plain": [], "copies": []}
    seconds = {"plain": 0.0, "copies": 0.0}
    for seed in range(args.seeds):
        order = list(runs) if seed % 2 == 0 else list(reversed(runs))
        for name in order:
            start = time.perf_counter()
            runs[name].append(train(str(DATA / name), seed, args.epochs))
            seconds[name] += time.perf_counter() - start
            print(f"seed {seed}: {name:6s} validation accuracy {runs[name][-1]:.3f}")
    result = {"image_size": SIZE, "copy_sizes": COPY_SIZES, "epochs": args.epochs}
    for name, values in runs.items():
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        print(f"{name:6s} mean {statistics.mean(values):.3f} +- {spread:.3f} (sd over seeds)")
        result[name] = {
            "accuracy": [round(v, 4) for v in values],
            "mean": round(statistics.mean(values), 4),
            "sd": round(spread, 4),
            "seconds": round(seconds[name], 1),
        }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
