"""write_records: round trips, sharding, workers, bad files, atomicity, overwrite."""

from __future__ import annotations

import glob
import json
import os

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

import tfrecords_tools.images as images_module
import tfrecords_tools.shards as shards_module
from tfrecords_tools import TFRecordsError, write_records


def _listing(folder) -> list[str]:
    return sorted(os.listdir(folder))


def _nothing_written(tmp_path) -> bool:
    """No `out` folder, and no staging folder of it left next to it."""
    return not (tmp_path / "out").exists() and not glob.glob(str(tmp_path / ".out.*"))


def test_round_trip_keeps_bytes_labels_and_folds(make_digits, read_back, tmp_path):
    csv = make_digits(40)
    manifest = write_records(str(tmp_path / "out"), csv=csv, id_col="id", folds=4, progress=False)
    frame = pd.read_csv(csv)
    records = read_back(str(tmp_path / "out"))
    assert manifest["num_records"] == len(records) == 40
    assert manifest["class_names"] == [str(c) for c in range(10)]
    for row in frame.itertuples():
        with open(os.path.join(os.path.dirname(csv), row.path), "rb") as f:
            assert records[row.id]["image"] == f.read()
        assert records[row.id]["label"] == [row.label]
    folds_csv = pd.read_csv(tmp_path / "out" / "folds.csv")
    assert {r.id: r.fold for r in folds_csv.itertuples()} == {
        key: record["fold"] for key, record in records.items()
    }
    for shard in manifest["shards"]:
        in_shard = [r for r in records.values() if r["file"] == shard["file"]]
        assert {r["fold"] for r in in_shard} == {shard["fold"]}
        assert len(in_shard) == shard["count"]
        assert os.path.getsize(tmp_path / "out" / shard["file"]) == shard["bytes"]
    assert sum(manifest["counts"]["per_fold"].values()) == 40
    assert manifest["counts"]["per_class"] == frame["label"].astype(str).value_counts().to_dict()
    assert manifest["image_stats"]["height"] == {"min": 8, "max": 8, "mean": 8.0}
    with open(tmp_path / "out" / "manifest.json") as f:
        assert json.load(f) == manifest


def test_without_folds_every_record_has_fold_minus_one(make_digits, read_back, tmp_path):
    manifest = write_records(str(tmp_path / "out"), csv=make_digits(12), progress=False)
    assert {r["fold"] for r in read_back(str(tmp_path / "out")).values()} == {-1}
    assert [s["file"] for s in manifest["shards"]] == ["train-f-1-00000.tfrec"]
    assert manifest["num_folds"] == 0


def test_shards_are_split_by_size(make_digits, tmp_path):
    csv = make_digits(40)
    manifest = write_records(str(tmp_path / "out"), csv=csv, shard_mb=0.002, progress=False)
    sizes = [shard["bytes"] for shard in manifest["shards"]]
    # ~200-byte records: 2 kB shards, split evenly by count, land within a few records of 2 kB.
    assert len(sizes) == 4
    assert all(1500 < size < 2500 for size in sizes)
    assert sum(shard["count"] for shard in manifest["shards"]) == 40


def test_two_workers_write_the_same_records(make_digits, read_back, tmp_path):
    csv = make_digits(40)
    one = write_records(str(tmp_path / "one"), csv=csv, progress=False)
    two = write_records(str(tmp_path / "two"), csv=csv, workers=2, progress=False)
    # Below one shard's worth of data, each worker still gets a shard of its own.
    assert len(one["shards"]) == 1 and len(two["shards"]) == 2
    assert read_back(str(tmp_path / "one")).keys() == read_back(str(tmp_path / "two")).keys()
    for key, record in read_back(str(tmp_path / "two")).items():
        assert record["image"] == read_back(str(tmp_path / "one"))[key]["image"]
    assert one["counts"] == two["counts"]


def test_resize_scales_the_longer_side_and_stores_jpeg(photos, tmp_path, read_back):
    pd.DataFrame({"path": photos, "label": ["a", "b"] * 3}).to_csv(tmp_path / "p.csv", index=False)
    manifest = write_records(
        str(tmp_path / "out"), csv=str(tmp_path / "p.csv"), resize=32, quality=80, progress=False
    )
    assert manifest["image_stats"]["width"]["max"] == 32
    assert manifest["image_stats"]["height"]["max"] == 24
    assert manifest["image_stats"]["formats"] == {"JPEG": 6}
    for record in read_back(str(tmp_path / "out")).values():
        assert tf.io.decode_jpeg(record["image"]).shape == (24, 32, 3)


def test_folder_tree_source(photos, tmp_path, read_back):
    for i, photo in enumerate(photos):
        os.makedirs(tmp_path / "tree" / ["cat", "dog"][i % 2], exist_ok=True)
        with (
            open(photo, "rb") as src,
            open(tmp_path / "tree" / ["cat", "dog"][i % 2] / f"{i}.jpg", "wb") as dst,
        ):
            dst.write(src.read())
    (tmp_path / "tree" / "notes.txt").write_text("not a class")
    manifest = write_records(
        str(tmp_path / "out"), from_folder=str(tmp_path / "tree"), progress=False
    )
    assert manifest["class_names"] == ["cat", "dog"]
    assert manifest["counts"]["per_class"] == {"cat": 3, "dog": 3}
    assert manifest["source"]["ignored_files"] == 1
    assert read_back(str(tmp_path / "out"))["dog/1"]["label"] == [1]


def _bad_files(root, photo: str) -> dict[str, str]:
    """One file of each kind of bad input; returns path -> expected reason."""
    good = (root / "img" / "d000.png").read_bytes()
    with open(photo, "rb") as f:
        jpeg = f.read()
    (root / "img" / "empty.png").write_bytes(b"")
    (root / "img" / "cut.png").write_bytes(good[: len(good) // 2])
    (root / "img" / "cut.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (root / "img" / "text.png").write_text("hello, not an image")
    return {
        "img/gone.png": "missing file",
        "img/empty.png": "empty file",
        "img/cut.png": "truncated",
        "img/cut.jpg": "truncated",
        "img/text.png": "not an image",
    }


def _with_rows(csv: str, paths: list[str]) -> None:
    frame = pd.read_csv(csv)
    extra = pd.DataFrame({"path": paths, "label": 1, "id": paths, "group": "gx"})
    pd.concat([frame, extra]).to_csv(csv, index=False)


def test_bad_files_are_skipped_and_listed(make_digits, photos, tmp_path, capsys):
    csv = make_digits(20)
    expected = _bad_files(tmp_path / "src", photos[0])
    _with_rows(csv, list(expected))
    manifest = write_records(str(tmp_path / "out"), csv=csv, max_bad=0.25)
    assert manifest["num_records"] == 20
    reasons = {item["path"]: item["reason"] for item in manifest["skipped"]}
    assert reasons.keys() == expected.keys()
    for path, reason in expected.items():
        assert reason in reasons[path]
    summary = capsys.readouterr().err
    assert "skipped 5 bad files" in summary and "img/cut.jpg: truncated" in summary
    assert len(pd.read_csv(tmp_path / "out" / "folds.csv")) == 20


def test_too_many_bad_files_fail_and_leave_nothing(make_digits, photos, tmp_path):
    csv = make_digits(20)
    _bad_files(tmp_path / "src", photos[0])
    _with_rows(csv, ["img/text.png"])
    with pytest.raises(TFRecordsError, match=r"1 of 21 images .* max_bad=0\.01.*img/text\.png"):
        write_records(str(tmp_path / "out"), csv=csv, progress=False)
    assert _nothing_written(tmp_path)


def test_nothing_readable_fails_even_with_max_bad_one(make_digits, tmp_path):
    csv = make_digits(3)
    for name in os.listdir(tmp_path / "src" / "img"):
        (tmp_path / "src" / "img" / name).write_bytes(b"")
    with pytest.raises(TFRecordsError, match="3 of 3 images are unusable"):
        write_records(str(tmp_path / "out"), csv=csv, max_bad=1.0, progress=False)


def test_interrupted_write_leaves_no_complete_looking_file(make_digits, tmp_path, monkeypatch):
    csv = make_digits(30)
    out = tmp_path / "out"
    calls = []
    real_check = images_module.check_image

    def failing_check(data, full=False):
        calls.append(1)
        if len(calls) == 25:
            raise RuntimeError("simulated crash")
        return real_check(data, full)

    monkeypatch.setattr(images_module, "check_image", failing_check)
    with pytest.raises(RuntimeError, match="simulated crash"):
        write_records(str(out), csv=csv, folds=3, progress=False)
    assert _nothing_written(tmp_path)
    monkeypatch.undo()
    assert write_records(str(out), csv=csv, folds=3, progress=False)["num_records"] == 30


def test_killed_worker_leaves_no_complete_looking_file(make_digits, tmp_path, monkeypatch):
    csv = make_digits(30)
    out = tmp_path / "out"
    real_prefix = shards_module.example_prefix

    def dying_prefix(size, label, sample_id, fold, task, *copies):
        if fold == 2 and sample_id.endswith("5"):
            os._exit(1)  # a killed worker: no exception, no cleanup of its own
        return real_prefix(size, label, sample_id, fold, task, *copies)

    monkeypatch.setattr(shards_module, "example_prefix", dying_prefix)
    with pytest.raises(Exception, match="terminated abruptly"):
        write_records(str(out), csv=csv, folds=3, workers=2, progress=False)
    assert _nothing_written(tmp_path)


def test_leftovers_of_a_killed_run_are_replaced(make_digits, tmp_path):
    out = tmp_path / "out"
    os.makedirs(out)
    (out / "train-f0-00000.tfrec").write_bytes(b"partial")
    (out / ".train-f0-00001.tfrec.tmp-999").write_bytes(b"partial")
    # A replaced dataset that a killed run was still deleting in the background.
    os.makedirs(out / ".old-abc123")
    (out / ".old-abc123" / "train-f1-00000.tfrec").write_bytes(b"old")
    manifest = write_records(str(out), csv=make_digits(12), folds=2, progress=False)
    assert _listing(out) == sorted(
        ["folds.csv", "manifest.json"] + [s["file"] for s in manifest["shards"]]
    )
    assert os.path.getsize(out / "train-f0-00000.tfrec") == manifest["shards"][0]["bytes"]


def test_existing_dataset_is_refused_unless_overwrite(make_digits, tmp_path):
    csv = make_digits(12)
    out = str(tmp_path / "out")
    write_records(out, csv=csv, folds=2, progress=False)
    with pytest.raises(TFRecordsError, match="already holds a dataset.*--overwrite"):
        write_records(out, csv=csv, progress=False)
    old_shards = {p: os.path.getsize(p) for p in glob.glob(os.path.join(out, "*.tfrec"))}
    assert len(old_shards) == 2
    manifest = write_records(out, csv=csv, overwrite=True, progress=False)
    # The old shards (swapped out with their folder, then deleted) are all gone.
    assert sorted(os.listdir(out)) == ["folds.csv", "manifest.json", "train-f-1-00000.tfrec"]
    assert manifest["num_folds"] == 0
    assert sorted(os.listdir(tmp_path)) == ["out", "src"]


def test_overwrite_keeps_the_users_own_files_in_out(make_digits, tmp_path):
    csv = make_digits(12)
    out = tmp_path / "out"
    write_records(str(out), csv=csv, folds=2, progress=False)
    (out / "notes.txt").write_text("mine")
    manifest = write_records(str(out), csv=csv, overwrite=True, progress=False)
    expected = ["folds.csv", "manifest.json", "notes.txt", manifest["shards"][0]["file"]]
    assert _listing(out) == expected
    assert (out / "notes.txt").read_text() == "mine"
    assert sorted(os.listdir(tmp_path)) == ["out", "src"]


def test_foreign_records_in_out_are_refused(make_digits, tmp_path):
    os.makedirs(tmp_path / "out")
    (tmp_path / "out" / "kaggle-00.tfrec").write_bytes(b"x")
    with pytest.raises(TFRecordsError, match="other .tfrec files"):
        write_records(str(tmp_path / "out"), csv=make_digits(4), progress=False)


def test_multi_label_columns_round_trip(make_digits, read_back, tmp_path):
    rng = np.random.default_rng(0)
    columns = {name: rng.integers(0, 2, 16) for name in ("cat", "dog", "sky")}
    csv = make_digits(16, **columns)
    manifest = write_records(
        str(tmp_path / "out"),
        csv=csv,
        label_cols=["cat", "dog", "sky"],
        id_col="id",
        progress=False,
    )
    assert manifest["task"] == "multi_label"
    assert manifest["class_names"] == ["cat", "dog", "sky"]
    records = read_back(str(tmp_path / "out"))
    for i in range(16):
        expected = [j for j, name in enumerate(columns) if columns[name][i]]
        assert records[f"s{i}"]["label"] == expected
    assert manifest["counts"]["per_class"] == {k: int(v.sum()) for k, v in columns.items()}


def test_multi_label_separator_round_trip(make_digits, read_back, tmp_path):
    tags = ["sky sea", "sea", "tree sky", "sea"] * 3
    csv = make_digits(12, tags=tags)
    manifest = write_records(
        str(tmp_path / "out"),
        csv=csv,
        label_cols=["tags"],
        label_sep=" ",
        id_col="id",
        progress=False,
    )
    assert manifest["class_names"] == ["sea", "sky", "tree"]
    records = read_back(str(tmp_path / "out"))
    assert records["s0"]["label"] == [0, 1] and records["s2"]["label"] == [1, 2]
    assert pd.read_csv(tmp_path / "out" / "folds.csv")["label"][0] == "sea sky"


def test_regression_round_trip(make_digits, read_back, tmp_path):
    values = np.linspace(-1.5, 2.25, 12)
    csv = make_digits(12, score=values)
    manifest = write_records(
        str(tmp_path / "out"), csv=csv, label_cols=["score"], id_col="id", folds=2, progress=False
    )
    assert manifest["task"] == "regression" and manifest["features"]["label"] == "float_list"
    assert manifest["class_names"] == [] and manifest["num_classes"] == 1
    records = read_back(str(tmp_path / "out"))
    got = [records[f"s{i}"]["label"][0] for i in range(12)]
    np.testing.assert_allclose(got, values, rtol=1e-6)
