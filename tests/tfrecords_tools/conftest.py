"""Real image files for the tfrecords_tools tests: digits as PNG, photo crops as JPEG."""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from PIL import Image
from sklearn.datasets import load_digits, load_sample_images


@pytest.fixture(scope="session")
def digits() -> tuple[np.ndarray, np.ndarray]:
    data = load_digits()
    return (data.images * 16).clip(0, 255).astype(np.uint8), data.target


@pytest.fixture
def make_digits(tmp_path, digits) -> Callable[..., str]:
    """Writes `n` digit PNGs under `img/` and a CSV (path, label, id, group); returns the CSV."""

    def make(n: int = 40, folder: str = "src", **extra_columns) -> str:
        images, targets = digits
        root = tmp_path / folder
        os.makedirs(root / "img", exist_ok=True)
        rows = []
        for i in range(n):
            Image.fromarray(images[i]).save(root / "img" / f"d{i:03d}.png")
            rows.append({"path": f"img/d{i:03d}.png", "label": int(targets[i]), "id": f"s{i}"})
        frame = pd.DataFrame(rows)
        frame["group"] = [f"g{i // 4}" for i in range(n)]
        for name, values in extra_columns.items():
            frame[name] = values
        frame.to_csv(root / "labels.csv", index=False)
        return str(root / "labels.csv")

    return make


@pytest.fixture(scope="session")
def photos(tmp_path_factory) -> list[str]:
    """Six 48x64 JPEG crops of scikit-learn's sample photographs."""
    root = tmp_path_factory.mktemp("photos")
    paths = []
    for i in range(6):
        photo = load_sample_images().images[i % 2]
        crop = photo[i * 40 : i * 40 + 96, i * 50 : i * 50 + 128]
        path = str(root / f"p{i}.jpg")
        Image.fromarray(crop).resize((64, 48)).save(path, quality=90)
        paths.append(path)
    return paths


def read_records(folder: str) -> dict[str, dict]:
    """Reads every record of a written folder, keyed by id."""
    files = sorted(tf.io.gfile.glob(os.path.join(folder, "*.tfrec")))
    records = {}
    for file in files:
        for raw in tf.data.TFRecordDataset(file):
            feature = tf.train.Example.FromString(raw.numpy()).features.feature
            label = feature["label"]
            values = label.int64_list.value or label.float_list.value
            record = {
                "image": feature["image"].bytes_list.value[0],
                "label": list(values),
                "fold": feature["fold"].int64_list.value[0],
                "file": os.path.basename(file),
            }
            records[feature["id"].bytes_list.value[0].decode()] = record
    return records


@pytest.fixture
def read_back() -> Callable[[str], dict[str, dict]]:
    return read_records
