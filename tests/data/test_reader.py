import kerastricks  # noqa: F401  (selects tf-keras before TensorFlow is imported)

# isort: split
import json
import uuid

import numpy as np
import pytest
import tensorflow as tf

from kerastricks.data import build_dataset, resolve_records
from kerastricks.data.parse import record_parser


def test_manifest_folder_gives_schema_and_fold_files(records):
    source = resolve_records(records)
    assert (source.task, source.num_classes, source.num_records) == ("single_label", 3, 24)
    assert source.class_names == ["c0", "c1", "c2"]
    assert source.folds == [0, 1, 2]
    assert [f.rsplit("/", 1)[1] for f in source.files_for(folds=[1])] == ["train-f1-00000.tfrec"]
    assert len(source.files_for(exclude_folds=[0])) == 2
    assert source.count(exclude_folds=[0]) == 16


def test_missing_fold_names_path_and_available_folds(records):
    with pytest.raises(
        ValueError, match=r"Fold\(s\) \[7\] do not exist.*available folds: \[0, 1, 2\]"
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
    with pytest.raises(KeyError, match=r"'image'.*have \['image_name', 'image_raw', 'kfold'"):
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
