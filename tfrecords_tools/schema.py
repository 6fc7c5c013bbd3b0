"""The record format shared with `kerastricks.data`: feature keys, version, Example building."""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

FORMAT_VERSION = 1
TASKS = ("single_label", "multi_label", "regression")
MANIFEST_NAME = "manifest.json"
FOLDS_CSV_NAME = "folds.csv"
SHARD_SUFFIX = ".tfrec"


class TFRecordsError(ValueError):
    """A problem with the input or the output folder that the user must fix (bad CSV, too many
    bad images, an existing dataset in the output folder)."""


def feature_types(task: str) -> dict[str, str]:
    """Returns the feature keys and their types for a task, as written into the manifest."""
    label_type = "float_list" if task == "regression" else "int64_list"
    return {"image": "bytes", "label": label_type, "id": "bytes", "fold": "int64"}


def shard_name(prefix: str, fold: int, index: int) -> str:
    """Returns the file name of shard `index` of `fold` (`-1` when no folds were assigned)."""
    return f"{prefix}-f{fold}-{index:05d}{SHARD_SUFFIX}"


def make_example(
    image: bytes, label: Sequence[int] | Sequence[float], sample_id: str, fold: int, task: str
) -> bytes:
    """Returns one serialized `tf.train.Example` in our record format."""
    if task == "regression":
        label_feature = tf.train.Feature(float_list=tf.train.FloatList(value=label))
    else:
        label_feature = tf.train.Feature(int64_list=tf.train.Int64List(value=label))
    features = {
        "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[image])),
        "label": label_feature,
        "id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[sample_id.encode("utf-8")])),
        "fold": tf.train.Feature(int64_list=tf.train.Int64List(value=[fold])),
    }
    example = tf.train.Example(features=tf.train.Features(feature=features))
    return example.SerializeToString()
