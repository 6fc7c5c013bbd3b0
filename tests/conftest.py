"""Shared fixtures: a small real digits record set, and tiny run configs on it."""

import os

import numpy as np
import pytest

import kerastricks  # noqa: F401  (Keras 2 API before TensorFlow loads)
from kerastricks.config import from_dict

TINY_BACKBONE = "resnet18"


@pytest.fixture(scope="session")
def digits_records(tmp_path_factory) -> str:
    """400 real digits (40 per class) as PNG -> TFRecords with 5 stratified folds."""
    from kerastricks.datasets import export_digits
    from tfrecords_tools import write_records

    root = tmp_path_factory.mktemp("digits")
    from sklearn.datasets import load_digits

    targets = load_digits().target
    indices = np.concatenate([np.flatnonzero(targets == c)[:40] for c in range(10)])
    csv_path = export_digits(str(root / "source"), indices=np.sort(indices))
    out = str(root / "records")
    write_records(out, csv=csv_path, id_col="id", folds=5, seed=0, progress=False)
    return out


def tiny_config(tmp_path, records: str, **sections):
    """A run config that trains in seconds: resnet18 at 16-32 px, a few steps per epoch."""
    raw = {
        "name": "tiny",
        "seed": 1,
        "output": str(tmp_path / "runs"),
        "data": {"records": records, "val_fold": 0},
        "model": {"backbone": TINY_BACKBONE, "head": {"dropout": 0.0}},
        "train": {
            "batch_size": 16,
            "steps_per_epoch": 3,
            "validation_steps": 2,
            "verbose": 0,
            "stages": [{"epochs": 1, "image_size": 32, "lr": 1e-3}],
        },
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key] = {**raw[key], **value}
        else:
            raw[key] = value
    return from_dict(raw)


@pytest.fixture
def make_config(tmp_path, digits_records):
    """Factory fixture: `make_config(train={...}, ...)` -> a validated tiny Config."""

    def factory(**sections):
        return tiny_config(tmp_path, digits_records, **sections)

    return factory


def pytest_configure(config):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
