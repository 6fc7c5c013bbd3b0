"""Built-in example data: scikit-learn's digits as image files, a CSV and TFRecords.

The digits (1,797 real handwritten 8x8 images, 10 classes) ship inside scikit-learn, so the
demo and the tests need no download. The records may go to any `tf.io.gfile` path (`gs://`);
the PNG files they are written from stay on local disk.
"""

from __future__ import annotations

import os
import tempfile

import numpy as np
import pandas as pd
from PIL import Image

from kerastricks.config.names import DATASETS

DIGITS_FOLDS = 5


def export_digits(folder: str, indices: np.ndarray | None = None) -> str:
    """Writes the digits as 8x8 grayscale PNGs plus `digits.csv` (path, label, id).

    Returns the CSV's path."""
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
    import tensorflow as tf

    from kerastricks._fs import read_json
    from tfrecords_tools import write_records

    manifest_path = os.path.join(records, "manifest.json")
    if tf.io.gfile.exists(manifest_path):
        return read_json(manifest_path)
    csv_path = export_digits(_local_source(records))
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


def split_digits_semi(
    labeled_fraction: float = 0.2, test_fraction: float = 0.2, seed: int = 42
) -> dict[str, np.ndarray]:
    """Indices of a semi-supervised digits split: a stratified held-out test split, then of
    the rest `labeled_fraction` of all samples keep their labels and the others are
    unlabelled (their true labels are written but never used for training)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    targets = load_digits().target
    everything = np.arange(len(targets))
    pool, test = train_test_split(
        everything, test_size=test_fraction, stratify=targets, random_state=seed
    )
    labeled_size = labeled_fraction / (1.0 - test_fraction)
    labeled, unlabeled = train_test_split(
        pool, train_size=labeled_size, stratify=targets[pool], random_state=seed
    )
    return {"labeled": np.sort(labeled), "unlabeled": np.sort(unlabeled), "test": np.sort(test)}


def prepare_digits_semi(
    root: str, folds: int = DIGITS_FOLDS, seed: int = 42, labeled_fraction: float = 0.2
) -> dict[str, str]:
    """Writes `labeled/` (with folds), `unlabeled/` and `test/` record folders under `root`
    for the pseudo-label demo; returns their paths. Existing complete folders are kept."""
    import tensorflow as tf

    from tfrecords_tools import write_records

    paths = {}
    for part, indices in split_digits_semi(labeled_fraction, seed=seed).items():
        out = os.path.join(root, part)
        paths[part] = out
        if tf.io.gfile.exists(os.path.join(out, "manifest.json")):
            continue
        csv_path = export_digits(os.path.join(_local_source(out), part), indices)
        write_records(
            out,
            csv=csv_path,
            id_col="id",
            folds=folds if part == "labeled" else None,
            seed=seed,
            progress=False,
        )
    return paths


def _prepare_digits_semi_for(records: str, seed: int = 42) -> dict:
    from kerastricks._fs import read_json

    # `data.records` names the labelled folder; its siblings get the unlabelled and test sets.
    records = records.rstrip("/")
    if os.path.basename(records) != "labeled":
        raise ValueError(
            f"data.prepare: digits_semi writes <root>/labeled, <root>/unlabeled and "
            f"<root>/test; set data.records to a folder named 'labeled', got {records}"
        )
    prepare_digits_semi(os.path.dirname(records), seed=seed)
    return read_json(os.path.join(records, "manifest.json"))


def _local_source(records: str) -> str:
    """A local folder for the PNGs that `records` is written from: its sibling `source/`,
    or a temporary folder when the records are remote (`gs://`, `ram://`)."""
    if "://" in records:
        return tempfile.mkdtemp(prefix="kerastricks-digits-")
    return os.path.join(os.path.dirname(os.path.abspath(records)), "source")


PREPARERS = {"digits": prepare_digits, "digits_semi": _prepare_digits_semi_for}
# The config checks these names without importing this module (kerastricks.config.names).
assert tuple(PREPARERS) == DATASETS
