"""Record parsing: one serialized `tf.train.Example` to image bytes, encoded label, weight, id."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence

import tensorflow as tf

from kerastricks.data.reader import RecordSource, copy_key

OPTIONAL_FIELDS = ("weight", "id", "fold")


def record_parser(
    source: RecordSource,
    fields: Collection[str] = OPTIONAL_FIELDS,
    copy_sizes: Sequence[int] | None = None,
) -> Callable[[tf.Tensor], dict[str, tf.Tensor]]:
    """Returns a graph function: serialized record -> dict of image, label and `fields`.

    With stored copies (`copy_sizes`, default `source.stored_sizes`), `copies` holds their
    bytes, string `[len(copy_sizes)]`, smallest first; "" where a record has no copy of a
    size (its image was not larger). Records of another set merged into one stream pass the
    main set's sizes, so that both streams have the same structure.

    `label` is float32 `[num_classes]`: one-hot (single-label; an empty label gives zeros),
    multi-hot (multi-label indices), the targets (regression), or the `soft_label` feature
    when a record has one of the right length (pseudo-labels). `fields` picks which of
    `weight` (default 1.0), `id` and `fold` are parsed too; a training pipeline that needs
    none of them skips their parsing and batching.
    """
    unknown = set(fields) - set(OPTIONAL_FIELDS)
    if unknown:
        raise ValueError(f"record_parser: unknown fields {sorted(unknown)}; use {OPTIONAL_FIELDS}")
    keys = {
        k: (v if k not in OPTIONAL_FIELDS or k in fields else None) for k, v in source.keys.items()
    }
    num_classes = source.num_classes
    spec: dict[str, tf.io.FixedLenFeature | tf.io.VarLenFeature] = {
        keys["image"]: tf.io.FixedLenFeature([], tf.string)
    }
    if keys["label"] is not None:
        spec[keys["label"]] = tf.io.VarLenFeature(source.label_dtype)
    if keys["id"] is not None:
        spec[keys["id"]] = tf.io.FixedLenFeature([], tf.string, default_value="")
    if keys["fold"] is not None:
        spec[keys["fold"]] = tf.io.FixedLenFeature([], tf.int64, default_value=-1)
    if keys["soft_label"] is not None:
        spec[keys["soft_label"]] = tf.io.VarLenFeature(tf.float32)
    if keys["weight"] is not None:
        spec[keys["weight"]] = tf.io.FixedLenFeature([], tf.float32, default_value=1.0)
    copy_sizes = source.stored_sizes if copy_sizes is None else sorted(copy_sizes)
    copy_keys = [copy_key(size) for size in copy_sizes]
    for key in copy_keys:
        spec[key] = tf.io.FixedLenFeature([], tf.string, default_value="")

    def parse(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
        example = tf.io.parse_single_example(serialized, spec)
        if keys["label"] is None:
            label = tf.zeros([num_classes], tf.float32)
        else:
            values = tf.sparse.to_dense(example[keys["label"]])
            label = encode_label(values, source.task, num_classes, source.path)
        if keys["soft_label"] is not None:
            soft = tf.sparse.to_dense(example[keys["soft_label"]])
            label = tf.cond(
                tf.size(soft) == num_classes,
                lambda: tf.reshape(soft, [num_classes]),
                lambda: label,
            )
        defaults = {
            "weight": tf.constant(1.0),
            "id": tf.constant(""),
            "fold": tf.constant(-1, tf.int64),
        }
        record = {"image": example[keys["image"]], "label": label}
        if copy_keys:
            record["copies"] = tf.stack([example[key] for key in copy_keys])
        for name in fields:
            record[name] = example[keys[name]] if keys[name] else defaults[name]
        return record

    return parse


def encode_label(values: tf.Tensor, task: str, num_classes: int, path: str) -> tf.Tensor:
    """Label values of one record -> float32 `[num_classes]` (one-hot, multi-hot or targets)."""
    if task == "regression":
        values = tf.cast(values, tf.float32)
        padded = tf.pad(values, [[0, tf.maximum(num_classes - tf.size(values), 0)]])
        return tf.reshape(padded[:num_classes], [num_classes])
    indices = tf.cast(values, tf.int32)
    # A label index past num_classes would one-hot to zeros and train silently on nothing.
    check = tf.debugging.assert_less(
        indices,
        num_classes,
        message=f"label index >= num_classes={num_classes} in records {path}",
    )
    with tf.control_dependencies([check]):
        hot = tf.one_hot(indices, num_classes, dtype=tf.float32)
    if task == "single_label":
        return tf.reduce_sum(hot[:1], axis=0)
    return tf.minimum(tf.reduce_sum(hot, axis=0), 1.0)
