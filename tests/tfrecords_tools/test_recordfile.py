"""The hand-written record format: Examples equal protobuf's, files equal TFRecordWriter's."""

from __future__ import annotations

import os

import pytest
import tensorflow as tf

from tfrecords_tools.images import BadImageError, read_bytes
from tfrecords_tools.recordfile import RecordFile
from tfrecords_tools.schema import example_prefix, make_example


def _protobuf_example(image, label, sample_id, fold, task) -> tf.train.Example:
    example = tf.train.Example()
    feature = example.features.feature
    feature["image"].bytes_list.value.append(image)
    labels = feature["label"].float_list if task == "regression" else feature["label"].int64_list
    labels.SetInParent()
    labels.value.extend(label)
    feature["id"].bytes_list.value.append(sample_id.encode("utf-8"))
    feature["fold"].int64_list.value.append(fold)
    return example


CASES = [
    (b"x" * 50_000, [3], "a", 2, "single_label"),  # a photo: 3-byte length varints
    (b"", [], "é_ü", -1, "multi_label"),  # empty image and label, negative fold, UTF-8 id
    (b"y" * 200, [0.5, -2.25], "r", 0, "regression"),
    (os.urandom(3_000_000), [1, 5, 9], "m" * 300, 7, "multi_label"),  # 4-byte varints
    (b"z" * 127, [2**40], "", -1, "single_label"),  # varint boundaries
    (b"z" * 128, [], "", 0, "regression"),
    (b"w" * 16_384, [127, 128, 16_383, 16_384], "i" * 16_384, 3, "multi_label"),
    # Around the end of the 3-byte-varint shortcut, and ids around the 1-byte-length one.
    (b"e" * (0x1FFF00 - 1), [1], "i" * 117, 1, "single_label"),
    (b"e" * 0x1FFF00, [1], "i" * 118, 1, "single_label"),
    (b"e" * (0x200000 - 19), [2], "i" * 127, 1, "single_label"),
]


@pytest.mark.parametrize("case", CASES, ids=range(len(CASES)))
def test_example_is_protobufs_message(case):
    ours = make_example(*case)
    expected = _protobuf_example(*case)
    assert tf.train.Example.FromString(ours) == expected
    assert ours == example_prefix(len(case[0]), *case[1:]) + case[0]
    # The fields in protobuf's own order: the same bytes once the map order is fixed.
    assert tf.train.Example.FromString(ours).SerializeToString(
        deterministic=True
    ) == expected.SerializeToString(deterministic=True)


def test_files_are_byte_identical_to_tfrecordwriter(tmp_path):
    payloads = [os.urandom(n) for n in (0, 1, 100, 70_000, 3_000_000)] + [b"p" * 500] * 1500
    ours, theirs = str(tmp_path / "ours.tfrec"), str(tmp_path / "theirs.tfrec")
    with RecordFile(ours) as records:
        for payload in payloads:
            records.write(payload[:7], payload[7:])
    with tf.io.TFRecordWriter(theirs) as writer:
        for payload in payloads:
            writer.write(payload)
    with open(ours, "rb") as a, open(theirs, "rb") as b:
        assert a.read() == b.read()


def test_gfile_paths_are_written_and_read_back_with_crcs_checked():
    payloads = [b"", b"one", os.urandom(100_000)]
    path = "ram://recordfile/shard.tfrec"
    with RecordFile(path) as records:
        for payload in payloads:
            records.write(payload)
    reader = tf.data.TFRecordDataset(path).apply(tf.data.experimental.assert_cardinality(3))
    assert [bytes(r.numpy()) for r in reader] == payloads


def test_read_bytes_reads_whole_files_and_names_bad_ones(tmp_path):
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(3_000_000))
    assert read_bytes(str(big)) == big.read_bytes()
    with pytest.raises(BadImageError, match="missing file"):
        read_bytes(str(tmp_path / "absent.jpg"))
    with pytest.raises(BadImageError, match="unreadable"):
        read_bytes(str(tmp_path))
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(BadImageError, match="empty file"):
        read_bytes(str(tmp_path / "empty.jpg"))
