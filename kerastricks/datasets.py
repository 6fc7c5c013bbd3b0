"""Built-in example data: scikit-learn's digits as image files, a CSV and TFRecords.

The digits (1,797 real handwritten 8x8 images, 10 classes) ship inside scikit-learn, so the
demo and the tests need no download.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
from PIL import Image

DIGITS_FOLDS = 5


def export_digits(folder: str, indices: np.ndarray | None = None) -> str:
    """Writes the digits as 8x8 grayscale PNGs plus `digits.csv` (path, label, id); returns the CSV."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    if indices is None:
        indices = np.arange(len(images))
    os.makedirs(os.path.join(folder, "images"), exist_ok=True)
    rows = []
    for index in indices:
        sample_id = f"digit_{index:04d}"
        relative = os.path.join("images", f"{sample_id}.png")
        target = os.path.join(folder, relative)
        if not os.path.exists(target):
            Image.fromarray(images[index], mode="L").save(target)
        rows.append({"path": relative, "label": int(digits.target[index]), "id": sample_id})
    csv_path = os.path.join(folder, "digits.csv")
    pd.DataFrame(rows).to_csv(csv_path, index=False)
    return csv_path


def prepare_digits(records: str, folds: int = DIGITS_FOLDS, seed: int = 42) -> dict:
    """Exports the digits next to `records` and writes them as TFRecords with stratified folds.

    Does nothing when `records` already holds a complete set (a `manifest.json`); returns the
    manifest.
    """
    from tfrecords_tools import write_records

    manifest_path = os.path.join(records, "manifest.json")
    if os.path.exists(manifest_path):
        with open(manifest_path) as f:
            return json.load(f)
    source = os.path.join(os.path.dirname(os.path.abspath(records)), "source")
    csv_path = export_digits(source)
    return write_records(
        records,
        csv=csv_path,
        image_col="path",
        label_cols=["label"],
        id_col="id",
        folds=folds,
        seed=seed,
        progress=False,
    )


PREPARERS = {"digits": prepare_digits}
