"""Foreign records (no `manifest.json`, e.g. a Kaggle dataset's): their schema is read from
the first record and the `keys` the user gives."""

from __future__ import annotations

import difflib
from typing import Any

import tensorflow as tf

from kerastricks.data.reader import DEFAULT_KEYS, TASKS, RecordSource, TFRecordsError

_LABEL_DTYPES = {"int64": tf.int64, "int": tf.int64, "float32": tf.float32, "float": tf.float32}


def _first_example(files: list[str]) -> tf.train.Example:
    try:
        for serialized in tf.data.TFRecordDataset(files[:1]).take(1):
            return tf.train.Example.FromString(serialized.numpy())
    except (tf.errors.DataLossError, tf.errors.OpError) as error:
        raise TFRecordsError(f"Cannot read a record from {files[0]}: {error.message}") from error
    raise TFRecordsError(f"Record file {files[0]} is empty.")


def foreign_source(
    path: str,
    files: list[str],
    keys: dict[str, Any],
    num_classes: int | None,
    task: str | None,
    label_dtype: str | None,
) -> RecordSource:
    """The RecordSource of records without our manifest: feature names from `keys` (or the
    defaults) checked against the first record, the label's dtype and task inferred."""
    features = _first_example(files).features.feature
    resolved: dict[str, str | None] = {}
    for role, default in DEFAULT_KEYS.items():
        name = keys.get(role, default)
        if name is not None and name not in features:
            if role in keys or role in ("image", "label"):
                close = difflib.get_close_matches(name, list(features), n=3, cutoff=0.3)
                raise TFRecordsError(
                    f"Feature {name!r} ({role}) is not in the records {files[0]}; the records "
                    f"have {sorted(features)}. Closest: {close}. Set keys={{'{role}': ...}}"
                    + (" (None for unlabelled records)." if role == "label" else ".")
                )
            name = None
        resolved[role] = name
    dtype = _label_dtype(label_dtype, features, resolved["label"], path)
    task = task or ("regression" if dtype == tf.float32 else "single_label")
    if task not in TASKS:
        raise TFRecordsError(f"task must be one of {TASKS}. Received: {task!r}")
    if num_classes is None and resolved["label"] is None:
        num_classes = 0  # unknown: the trained model's count comes with build_dataset
    if num_classes is None:
        if task != "regression":
            raise TFRecordsError(
                f"Records {path} have no manifest: pass num_classes (classes, or regression "
                "targets) for their labels."
            )
        num_classes = len(features[resolved["label"]].float_list.value)
    return RecordSource(
        path,
        files,
        task,
        int(num_classes),
        [],
        resolved,
        dtype,
        labeled=resolved["label"] is not None,
    )


def _label_dtype(
    label_dtype: str | None, features: Any, label_key: str | None, path: str
) -> tf.DType:
    if label_dtype is not None:
        if label_dtype not in _LABEL_DTYPES:
            raise TFRecordsError(
                f"label_dtype must be one of {sorted(_LABEL_DTYPES)}. Received: {label_dtype!r}"
            )
        return _LABEL_DTYPES[label_dtype]
    if label_key is None:
        return tf.int64
    kind = features[label_key].WhichOneof("kind")
    if kind == "bytes_list":
        raise TFRecordsError(
            f"Label feature {label_key!r} in {path} holds bytes; kerastricks reads integer "
            "class indices or float targets. Re-write the records with tfrecords-tools."
        )
    return tf.float32 if kind == "float_list" else tf.int64
