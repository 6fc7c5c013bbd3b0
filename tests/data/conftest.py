"""Data-test fixtures: images and records written with tf.train.Example, per docs/design.md.

The helpers are handed to tests through the `kt` fixture (tests cannot import conftest)."""

from __future__ import annotations

import kerastricks  # noqa: F401  (selects tf-keras before TensorFlow is imported)

# isort: split
import io
import json
import types
from collections.abc import Sequence

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image


def encode(image: np.ndarray, fmt: str = "JPEG") -> bytes:
    """PIL-encodes a uint8 [H, W] or [H, W, 3] array."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def make_example(features: dict) -> bytes:
    """Serializes {key: bytes | str | list[int] | list[float] | int | float} as an Example."""
    out = {}
    for key, value in features.items():
        if isinstance(value, (bytes, str)):
            value = value.encode() if isinstance(value, str) else value
            out[key] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
        elif isinstance(value, (list, tuple)) and value and isinstance(value[0], float):
            out[key] = tf.train.Feature(float_list=tf.train.FloatList(value=value))
        elif isinstance(value, (list, tuple)):
            out[key] = tf.train.Feature(int64_list=tf.train.Int64List(value=value))
        elif isinstance(value, float):
            out[key] = tf.train.Feature(float_list=tf.train.FloatList(value=[value]))
        else:
            out[key] = tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))
    return tf.train.Example(features=tf.train.Features(feature=out)).SerializeToString()


def write_file(path: str, examples: Sequence[bytes]) -> None:
    with tf.io.TFRecordWriter(path) as writer:
        for example in examples:
            writer.write(example)


def write_our_records(
    folder: str,
    images: Sequence[np.ndarray],
    labels: Sequence[list],
    folds: Sequence[int],
    task: str = "single_label",
    num_classes: int = 3,
    extra: Sequence[dict] | None = None,
    fmt: str = "JPEG",
) -> str:
    """Writes one shard per fold plus manifest.json, in our record format; returns folder."""
    tf.io.gfile.makedirs(folder)
    shards = []
    for fold in sorted(set(folds)):
        name = f"train-f{fold}-00000.tfrec"
        examples = []
        for i, (image, label, f) in enumerate(zip(images, labels, folds, strict=True)):
            if f != fold:
                continue
            record = {"image": encode(image, fmt), "label": label, "id": f"id{i:03d}", "fold": f}
            record.update((extra or [{}] * len(images))[i])
            examples.append(make_example(record))
        write_file(f"{folder}/{name}", examples)
        shards.append({"file": name, "fold": fold, "count": len(examples), "bytes": 0})
    manifest = {
        "format_version": 1,
        "task": task,
        "features": {"image": "bytes", "label": "int64_list", "id": "bytes", "fold": "int64"},
        "class_names": [] if task == "regression" else [f"c{k}" for k in range(num_classes)],
        "num_classes": num_classes,
        "num_records": len(images),
        "num_folds": len([f for f in set(folds) if f >= 0]),
        "shards": shards,
    }
    with tf.io.gfile.GFile(f"{folder}/manifest.json", "w") as handle:
        handle.write(json.dumps(manifest))
    return folder


def sample_images(count: int, size: int = 48, seed: int = 0) -> list[np.ndarray]:
    """Random crops of scikit-learn's sample photos: real JPEG-like content."""
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        photo = photos[i % len(photos)]
        y = rng.integers(0, photo.shape[0] - size)
        x = rng.integers(0, photo.shape[1] - size)
        out.append(np.ascontiguousarray(photo[y : y + size, x : x + size]))
    return out


@pytest.fixture(scope="session")
def kt() -> types.SimpleNamespace:
    """The helpers above, for tests."""
    return types.SimpleNamespace(
        encode=encode,
        make_example=make_example,
        write_file=write_file,
        write_our_records=write_our_records,
        sample_images=sample_images,
    )


@pytest.fixture(scope="session")
def records(tmp_path_factory: pytest.TempPathFactory) -> str:
    """24 single-label 48 px JPEG records, 3 classes, 3 folds (8 each)."""
    folder = str(tmp_path_factory.mktemp("records"))
    labels = [[i % 3] for i in range(24)]
    folds = [i % 3 for i in range(24)]
    return write_our_records(folder, sample_images(24), labels, folds)
