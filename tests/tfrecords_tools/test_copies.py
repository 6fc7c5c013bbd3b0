"""`write --sizes`: re-encoded copies next to the image, in the manifest, inspect and verify."""

from __future__ import annotations

import io
import os

import pandas as pd
import tensorflow as tf
from PIL import Image

from tfrecords_tools import inspect_records, verify_records, write_records
from tfrecords_tools.cli import main as cli_main
from tfrecords_tools.schema import make_example


def _photo_csv(photos: list[str], folder) -> str:
    frame = pd.DataFrame({"path": photos, "label": [i % 2 for i in range(len(photos))]})
    frame.to_csv(folder / "photos.csv", index=False)
    return str(folder / "photos.csv")


def _features(folder: str) -> list[dict]:
    files = sorted(tf.io.gfile.glob(os.path.join(folder, "*.tfrec")))
    return [
        dict(tf.train.Example.FromString(raw.numpy()).features.feature)
        for raw in tf.data.TFRecordDataset(files)
    ]


def _size(data: bytes) -> tuple[int, int]:
    width, height = Image.open(io.BytesIO(data)).size
    return height, width


def test_copies_are_stored_counted_and_never_upscaled(photos, tmp_path):
    # Six 48x64 JPEGs: 24 and 32 px copies; 48 px is not below the shorter side, so none.
    out = str(tmp_path / "out")
    manifest = write_records(
        out, csv=_photo_csv(photos, tmp_path), sizes=[32, 48, 24], progress=False
    )
    assert manifest["stored_sizes"] == [24, 32, 48]
    assert manifest["counts"]["copies"] == {"24": 6, "32": 6, "48": 0}
    assert manifest["options"]["sizes"] == [24, 32, 48]
    assert list(manifest["features"]) == [
        "image", "image_24", "image_32", "image_48", "label", "id", "fold"
    ]  # fmt: skip
    originals = set()
    for path in photos:
        with open(path, "rb") as f:
            originals.add(f.read())
    records = _features(out)
    assert len(records) == 6
    for feature in records:
        assert feature["image"].bytes_list.value[0] in originals  # the main image untouched
        assert _size(feature["image_24"].bytes_list.value[0]) == (24, 32)
        assert _size(feature["image_32"].bytes_list.value[0]) == (32, 43)  # 64 * 32 / 48
        assert "image_48" not in feature
    assert verify_records(out)["ok"]


def test_copies_with_resize_and_png_images(make_digits, photos, tmp_path):
    # --resize 40 (longer side): 30x40 JPEGs; a 32 px copy would upscale, a 16 px one not.
    out = str(tmp_path / "resized")
    csv = _photo_csv(photos, tmp_path)
    manifest = write_records(out, csv=csv, resize=40, sizes=[16, 32], progress=False)
    assert manifest["counts"]["copies"] == {"16": 6, "32": 0}
    assert {_size(f["image_16"].bytes_list.value[0]) for f in _features(out)} == {(16, 21)}
    # PNG images (8 px digits) get no copies: the reader picks among JPEGs by their headers.
    digits = write_records(str(tmp_path / "d"), csv=make_digits(6), sizes=[4], progress=False)
    assert digits["counts"]["copies"] == {"4": 0}


def test_cli_sizes_inspect_and_verify_of_a_corrupt_copy(photos, tmp_path, capsys):
    out = str(tmp_path / "out")
    csv = _photo_csv(photos, tmp_path)
    assert cli_main(["write", "--csv", csv, "--out", out, "--sizes", "32,24", "--quiet"]) == 0
    capsys.readouterr()
    assert cli_main(["inspect", out]) == 0
    text = capsys.readouterr().out
    assert "stored copies (shorter side): 24 px (6 records), 32 px (6 records)" in text
    assert "image_24: bytes [1]" in text
    assert inspect_records(out)["manifest"]["stored_sizes"] == [24, 32]

    with open(photos[0], "rb") as f:
        good = f.read()
    copy = Image.open(io.BytesIO(good)).resize((32, 24))
    buffer = io.BytesIO()
    copy.save(buffer, format="JPEG")
    copy_bytes = buffer.getvalue()
    bad = str(tmp_path / "bad.tfrec")
    with tf.io.TFRecordWriter(bad) as writer:
        writer.write(make_example(good, [0], "a", -1, "single_label", [(24, copy_bytes)]))
        writer.write(make_example(good, [0], "b", -1, "single_label", [(24, copy_bytes[:40])]))
        writer.write(make_example(good, [0], "c", -1, "single_label", [(16, copy_bytes)]))
    report = verify_records(bad)
    assert not report["ok"]
    problems = report["problems"]
    assert len(problems) == 2
    assert "record 1: copy image_24 does not decode" in problems[0]
    assert "record 2: copy image_16 is 24x32, its shorter side is not 16" in problems[1]


def test_make_example_with_copies_parses_back():
    image, small = b"\xff\xd8\xff" + bytes(range(256)) * 80, b"\xff\xd8\xffsmall"
    record = make_example(image, [2], "id-7", 1, "single_label", [(64, small), (128, b"x" * 300)])
    feature = tf.train.Example.FromString(record).features.feature
    assert feature["image"].bytes_list.value[0] == image
    assert feature["image_64"].bytes_list.value[0] == small
    assert feature["image_128"].bytes_list.value[0] == b"x" * 300
    assert list(feature["label"].int64_list.value) == [2]
    assert feature["id"].bytes_list.value[0] == b"id-7"
    spec = {"image_64": tf.io.FixedLenFeature([], tf.string)}
    assert tf.io.parse_single_example(record, spec)["image_64"].numpy() == small
