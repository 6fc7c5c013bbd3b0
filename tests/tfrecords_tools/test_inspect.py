"""inspect_records and verify_records on our records, foreign ones, and corrupted ones."""

from __future__ import annotations

import os

import pytest
import tensorflow as tf

from tfrecords_tools import TFRecordsError, inspect_records, verify_records, write_records
from tfrecords_tools.schema import make_example


def _foreign_file(path: str, photos: list[str]) -> None:
    """A Kaggle-style file: `image_name`, `target`, `patient_id` and the JPEG under `encoded`."""
    with tf.io.TFRecordWriter(path) as writer:
        for i, photo in enumerate(photos):
            with open(photo, "rb") as f:
                data = f.read()
            feature = {
                "image_name": tf.train.Feature(
                    bytes_list=tf.train.BytesList(value=[b"ISIC_%d" % i])
                ),
                "patient_id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"p"])),
                "encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[data])),
                "target": tf.train.Feature(int64_list=tf.train.Int64List(value=[i % 2])),
                "scores": tf.train.Feature(float_list=tf.train.FloatList(value=[0.5] * (i % 3))),
            }
            example = tf.train.Example(features=tf.train.Features(feature=feature))
            writer.write(example.SerializeToString())


def test_inspect_our_folder(make_digits, tmp_path):
    write_records(str(tmp_path / "out"), csv=make_digits(20), folds=2, progress=False)
    report = inspect_records(str(tmp_path / "out"))
    assert report["num_records"] == 20
    assert [item["records"] for item in report["files"]] == [10, 10]
    assert report["features"]["label"] == {"type": "int64", "shape": "[1]", "present_in": 16}
    assert report["features"]["image"]["type"] == "bytes"
    assert report["image_key"] == "image" and report["image_shape"] == [8, 8, 1]
    assert report["manifest"]["num_records"] == 20


def test_inspect_a_foreign_keyed_file(photos, tmp_path):
    _foreign_file(str(tmp_path / "kaggle-00.tfrec"), photos)
    report = inspect_records(str(tmp_path / "kaggle-*.tfrec"))
    assert report["num_records"] == 6
    assert set(report["features"]) == {"image_name", "patient_id", "encoded", "target", "scores"}
    assert report["features"]["target"]["type"] == "int64"
    # Records 0 and 3 hold no scores at all, so the value count ranges from 0 to 2.
    assert report["features"]["scores"] == {"type": "float", "shape": "[0..2]", "present_in": 6}
    assert report["image_key"] == "encoded"
    assert report["image_shape"] == [48, 64, 3]
    assert report["manifest"] is None


def test_inspect_nothing_found(tmp_path):
    with pytest.raises(TFRecordsError, match="no TFRecord files at"):
        inspect_records(str(tmp_path / "*.tfrec"))


def test_verify_passes_on_a_good_folder_and_a_foreign_file(make_digits, photos, tmp_path):
    write_records(str(tmp_path / "out"), csv=make_digits(20), folds=2, progress=False)
    report = verify_records(str(tmp_path / "out"))
    assert report["ok"] and report["num_records"] == 20 and report["problems"] == []
    _foreign_file(str(tmp_path / "k.tfrec"), photos)
    assert verify_records(str(tmp_path / "k.tfrec"))["ok"]


def test_verify_names_a_shard_with_flipped_bytes(make_digits, tmp_path):
    manifest = write_records(str(tmp_path / "out"), csv=make_digits(20), folds=2, progress=False)
    shard = tmp_path / "out" / manifest["shards"][1]["file"]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    report = verify_records(str(tmp_path / "out"))
    assert not report["ok"]
    assert len(report["problems"]) == 1
    problem = report["problems"][0]
    assert problem.startswith(str(shard)) and "corrupted record" in problem
    assert report["files"][0]["errors"] == []
    # The bad record is in the middle: the records before it were read.
    assert 0 < report["files"][1]["records"] < 10
    assert inspect_records(str(tmp_path / "out"))["files"][1]["records"] is None


def test_verify_names_a_record_whose_image_does_not_decode(tmp_path):
    good = tf.io.encode_png(tf.zeros([4, 4, 1], tf.uint8)).numpy()
    with tf.io.TFRecordWriter(str(tmp_path / "x.tfrec")) as writer:
        writer.write(make_example(good, [0], "a", -1, "single_label"))
        writer.write(make_example(good[:30], [0], "b", -1, "single_label"))
        writer.write(make_example(b"\xff\xd8\xffnot a jpeg", [0], "c", -1, "single_label"))
    report = verify_records(str(tmp_path / "x.tfrec"))
    assert report["files"][0]["records"] == 3
    errors = report["files"][0]["errors"]
    assert [e.split(":")[0] for e in errors] == ["record 1", "record 2"]
    assert all("does not decode" in e for e in errors)


def test_verify_reports_a_count_that_disagrees_with_the_manifest(make_digits, tmp_path):
    manifest = write_records(str(tmp_path / "out"), csv=make_digits(12), progress=False)
    shard = str(tmp_path / "out" / manifest["shards"][0]["file"])
    records = [r.numpy() for r in tf.data.TFRecordDataset(shard)]
    with tf.io.TFRecordWriter(shard) as writer:
        for record in records[:-1]:
            writer.write(record)
    report = verify_records(str(tmp_path / "out"))
    assert report["problems"] == [f"{shard}: 11 records, the manifest says 12"]
    assert os.path.exists(shard)
