import kerastricks  # noqa: F401  (selects tf-keras before TensorFlow is imported)

# isort: split
import json
import uuid

import numpy as np
import pytest
import tensorflow as tf

from kerastricks.data import build_dataset, resolve_records
from kerastricks.data.parse import record_parser
from kerastricks.data.reader import TFRecordsError, read_errors_named


def test_manifest_folder_gives_schema_and_fold_files(records):
    source = resolve_records(records)
    assert (source.task, source.num_classes, source.num_records) == ("single_label", 3, 24)
    assert source.class_names == ["c0", "c1", "c2"]
    assert source.folds == [0, 1, 2]
    assert [f.rsplit("/", 1)[1] for f in source.files_for(folds=[1])] == ["train-f1-00000.tfrec"]
    assert len(source.files_for(exclude_folds=[0])) == 2
    assert source.count(exclude_folds=[0]) == 16
    assert source.fold_counts() == {0: 8, 1: 8, 2: 8}  # the manifest's per_fold


def test_missing_fold_names_path_and_available_folds(records):
    with pytest.raises(
        TFRecordsError, match=r"Fold\(s\) \[7\] do not exist.*available folds: \[0, 1, 2\]"
    ):
        resolve_records(records).files_for(folds=[7])


def test_no_match_and_invalid_manifest_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing-here"):
        resolve_records(str(tmp_path / "nothing-here-*.tfrec"))
    (tmp_path / "manifest.json").write_text(json.dumps({"format_version": 1, "task": "x"}))
    with pytest.raises(ValueError, match=r"manifest.json is invalid: missing \['num_classes'"):
        resolve_records(str(tmp_path))
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        resolve_records(str(tmp_path))


def _foreign(kt, path, count=6, label_key="target", label=None):
    examples = []
    for i, image in enumerate(kt.sample_images(count, size=32)):
        features = {"image_raw": kt.encode(image), "image_name": f"n{i}", "kfold": i % 2}
        features[label_key] = label(i) if label else [i % 4]
        examples.append(kt.make_example(features))
    kt.write_file(path, examples)
    return path


def test_foreign_records_with_custom_keys(kt, tmp_path):
    path = _foreign(kt, str(tmp_path / "foreign.tfrecord"))
    keys = {"image": "image_raw", "label": "target", "id": "image_name", "fold": "kfold"}
    source = resolve_records(str(tmp_path / "*.tfrecord"), keys, num_classes=4)
    assert source.files == [path] and source.task == "single_label"
    assert source.num_records == 6 and source.count(folds=[1]) == 3
    # Without a manifest: folds counted by reading, unless the caller will not pay a pass.
    assert sum(source.fold_counts().values()) == 6 and source.fold_counts()[1] == 3
    assert source.count(folds=[1], read=False) is None
    images, labels, ids = next(
        iter(build_dataset(source, 16, 8, training=False, folds=[1], with_ids=True))
    )
    assert [i.decode() for i in ids.numpy()] == ["n1", "n3", "n5"]
    np.testing.assert_array_equal(labels.numpy().argmax(1), [1, 3, 1])
    assert images.shape == (3, 16, 16, 3)


def test_parser_reads_only_the_fields_asked_for(kt, tmp_path):
    _foreign(kt, str(tmp_path / "foreign.tfrecord"))
    keys = {"image": "image_raw", "label": "target", "id": "image_name", "fold": "kfold"}
    source = resolve_records(str(tmp_path / "*.tfrecord"), keys, num_classes=4)
    serialized = next(iter(tf.data.TFRecordDataset(source.files)))
    assert sorted(record_parser(source, ())(serialized)) == ["image", "label"]
    record = record_parser(source, ("id", "fold"))(serialized)
    assert (record["id"].numpy(), int(record["fold"])) == (b"n0", 0)
    assert float(record_parser(source)(serialized)["weight"]) == 1.0  # default: every field
    with pytest.raises(ValueError, match=r"unknown fields \['ids'\]"):
        record_parser(source, ("ids",))


def test_foreign_regression_labels_inferred_from_floats(kt, tmp_path):
    path = _foreign(kt, str(tmp_path / "r.tfrec"), label=lambda i: [i * 0.5, -1.0])
    source = resolve_records([path], {"image": "image_raw", "label": "target"})
    assert (source.task, source.num_classes) == ("regression", 2)
    _, labels = next(iter(build_dataset(source, 16, 6, training=False)))
    np.testing.assert_allclose(labels[:, 0], [0.0, 0.5, 1.0, 1.5, 2.0, 2.5])


def test_missing_foreign_key_lists_existing_keys(kt, tmp_path):
    path = _foreign(kt, str(tmp_path / "f.tfrec"))
    with pytest.raises(TFRecordsError, match=r"'image'.*have \['image_name', 'image_raw', 'kfold'"):
        resolve_records(path, num_classes=4)
    with pytest.raises(ValueError, match="pass num_classes"):
        resolve_records(path, {"image": "image_raw", "label": "target"})


def test_ram_filesystem_stands_for_gcs(kt):
    folder = f"ram://kerastricks-{uuid.uuid4().hex}/records"
    kt.write_our_records(
        folder,
        kt.sample_images(6, size=32),
        [[i % 2] for i in range(6)],
        [0, 1, 0, 1, 0, 1],
        num_classes=2,
    )
    source = resolve_records(folder)
    assert source.files[0].startswith("ram://") and source.num_records == 6
    dataset = build_dataset(folder, 16, 4, training=False, folds=[0], with_ids=True)
    ids = np.concatenate([batch[2].numpy() for batch in dataset])
    assert [i.decode() for i in ids] == ["id000", "id002", "id004"]
    assert tf.io.gfile.glob(folder + "/*.tfrec") == sorted(source.files)


def _unlabelled_folder(kt, folder: str, count: int = 5) -> str:
    """A test set as `tfrecords-tools write` leaves it without --label-col: no label feature."""
    tf.io.gfile.makedirs(folder)
    examples = [
        kt.make_example({"image": kt.encode(image), "id": f"t{i}", "fold": -1})
        for i, image in enumerate(kt.sample_images(count, size=32))
    ]
    kt.write_file(f"{folder}/test-f-1-00000.tfrec", examples)
    size = tf.io.gfile.stat(f"{folder}/test-f-1-00000.tfrec").length
    manifest = {
        "format_version": 1,
        "task": None,
        "labeled": False,
        "features": {"image": "bytes", "id": "bytes", "fold": "int64"},
        "class_names": [],
        "num_classes": 0,
        "num_records": count,
        "num_folds": 0,
        "shards": [{"file": "test-f-1-00000.tfrec", "fold": -1, "count": count, "bytes": size}],
    }
    with tf.io.gfile.GFile(f"{folder}/manifest.json", "w") as handle:
        handle.write(json.dumps(manifest))
    return folder


def test_unlabelled_records_predict_with_the_models_class_count(kt, tmp_path):
    folder = _unlabelled_folder(kt, str(tmp_path / "test"))
    source = resolve_records(folder)
    assert (source.labeled, source.num_classes, source.keys["label"]) == (False, 0, None)
    assert resolve_records(folder, num_classes=4).num_classes == 4
    assert resolve_records(source, num_classes=4).num_classes == 4
    images, labels, ids = next(
        iter(build_dataset(folder, 16, 8, training=False, num_classes=4, with_ids=True))
    )
    assert images.shape == (5, 16, 16, 3) and labels.shape == (5, 4)
    assert not labels.numpy().any()
    assert [i.decode() for i in ids.numpy()] == ["t0", "t1", "t2", "t3", "t4"]
    _, labels, _ = next(iter(build_dataset(source, 16, 8, False, num_classes=3, with_ids=True)))
    assert labels.shape == (5, 3)
    with pytest.raises(ValueError, match="have no labels .* not trained on"):
        build_dataset(folder, 16, 4, training=True, num_classes=4)


def test_labelled_sources_say_so(records, kt, tmp_path):
    assert resolve_records(records).labeled is True
    path = _foreign(kt, str(tmp_path / "f.tfrec"))
    source = resolve_records(path, {"image": "image_raw", "label": None})
    assert (source.labeled, source.num_classes) == (False, 0)


def test_check_shards_names_a_truncated_shard(kt, tmp_path):
    folder = _unlabelled_folder(kt, str(tmp_path / "test"))
    source = resolve_records(folder)
    source.check_shards()
    shard = tmp_path / "test" / "test-f-1-00000.tfrec"
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    with pytest.raises(
        ValueError,
        match=rf"{shard} \({len(data) // 2} bytes, the manifest says "
        rf"{len(data)}\).*tfrecords-tools verify .*test",
    ):
        source.check_shards()


def test_a_read_error_names_the_records_and_the_bad_shard(kt, tmp_path):
    folder = _unlabelled_folder(kt, str(tmp_path / "test"))
    source = resolve_records(folder, num_classes=2)
    shard = tmp_path / "test" / "test-f-1-00000.tfrec"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size: only reading finds it
    shard.write_bytes(bytes(data))
    dataset = build_dataset(source, 16, 8, training=False)
    with pytest.raises(tf.errors.DataLossError, match=rf"corrupted record.*{folder}.*verify"):
        with read_errors_named(source):
            list(dataset)
    shard.write_bytes(bytes(data[:-10]))
    with pytest.raises(tf.errors.DataLossError, match=r"differ in size.*test-f-1-00000.tfrec"):
        with read_errors_named(source):
            list(build_dataset(source, 16, 8, training=False))
