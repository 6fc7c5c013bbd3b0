import kerastricks  # noqa: F401  (selects tf-keras before TensorFlow is imported)

# isort: split
import numpy as np
import pytest
import tensorflow as tf

from kerastricks.data import build_dataset

AUGMENT = [
    {"name": "RandomFlip", "mode": "horizontal"},
    {"name": "affine", "rotate": 15, "zoom": 0.1, "p": 0.5},
    {"name": "RandomContrast", "factor": 0.2},
    {"name": "mixup_cutmix"},
]
PY_FUNCS = {"PyFunc", "PyFuncStateless", "EagerPyFunc", "EagerPyFuncV2"}


def _first(dataset):
    return [t.numpy() for t in next(iter(dataset))]


def test_training_batch_shapes_dtypes_ranges_and_static_spec(records):
    dataset = build_dataset(records, (32, 24), 8, training=True, augment=AUGMENT, seed=0)
    images_spec, labels_spec = dataset.element_spec
    assert images_spec.shape == (8, 32, 24, 3) and labels_spec.shape == (8, 3)
    images, labels = _first(dataset)
    assert images.dtype == np.float32 and labels.dtype == np.float32
    assert 0.0 <= images.min() and images.max() <= 255.0 and images.std() > 10.0
    np.testing.assert_allclose(labels.sum(1), 1.0, atol=1e-5)


def test_same_seed_same_first_batch(records):
    first = _first(build_dataset(records, 32, 8, True, AUGMENT, seed=5))
    again = _first(build_dataset(records, 32, 8, True, AUGMENT, seed=5))
    other = _first(build_dataset(records, 32, 8, True, AUGMENT, seed=6))
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert np.abs(first[0] - other[0]).mean() > 1.0


def _op_names(dataset):
    graph = tf.compat.v1.GraphDef.FromString(dataset._as_serialized_graph().numpy())
    names = {node.op for node in graph.node}
    for function in graph.library.function:
        names |= {node.op for node in function.node_def}
    return names


def test_pipeline_graph_has_no_python_ops(records):
    dataset = build_dataset(records, 32, 8, True, AUGMENT, seed=0, resize="random_resized_crop")
    names = _op_names(dataset)
    assert {"DecodeAndCropJpeg", "ParseExampleV2", "StatelessSampleDistortedBoundingBox"} <= names
    assert not names & PY_FUNCS
    sneaky = tf.data.Dataset.range(3).map(lambda x: tf.py_function(lambda v: v, [x], tf.int64))
    assert _op_names(sneaky) & PY_FUNCS  # the check itself can fail


def test_evaluation_keeps_file_then_record_order_and_remainder(records):
    batches = list(build_dataset(records, 16, 5, training=False, with_ids=True))
    ids = [i.decode() for batch in batches for i in batch[2].numpy()]
    # shards are per fold (f0, f1, f2); record i is in fold i % 3
    assert ids == [f"id{i:03d}" for f in range(3) for i in range(24) if i % 3 == f]
    assert [len(batch[0]) for batch in batches] == [5, 5, 5, 5, 4]
    labels = np.concatenate([batch[1] for batch in batches])
    np.testing.assert_array_equal(labels.argmax(1), [int(i[2:]) % 3 for i in ids])


def test_folds_and_repeat(records):
    one_pass = build_dataset(records, 16, 4, True, seed=0, exclude_folds=[0], repeat=False)
    assert sum(1 for _ in one_pass) == 4  # 16 records, drop_remainder
    infinite = build_dataset(records, 16, 4, True, seed=0, folds=[0], repeat=True)
    assert sum(1 for _ in infinite.take(7)) == 7  # 8 records, repeated


def _epoch_by_id(dataset):
    """One pass of a `with_weights` training dataset whose weight is the record's index."""
    out = {}
    for images, _, weights in dataset:
        out.update(zip(weights.numpy().astype(int).tolist(), images.numpy(), strict=True))
    return out


@pytest.mark.parametrize("cache", [True, "file"])
def test_cache_before_random_steps(kt, tmp_path, cache):
    # The weight of record i is i: it names the record in a (shuffled) training batch.
    count = 24
    labels, folds = [[i % 3] for i in range(count)], [i % 3 for i in range(count)]
    ids = [{"weight": float(i)} for i in range(count)]
    folder = str(tmp_path / "records")
    black = [np.zeros((48, 48, 3), np.uint8)] * count
    flip = [{"name": "RandomFlip", "mode": "horizontal"}]
    for resize, augment in (("squash", flip), ("random_resized_crop", None)):
        kt.write_our_records(folder, kt.sample_images(count), labels, folds, extra=ids)
        dataset = build_dataset(
            folder,
            16,
            8,
            True,
            augment,
            seed=1,
            cache=str(tmp_path / "cache") if cache == "file" else cache,
            resize=resize,
            repeat=False,
            with_weights=True,
        )
        first = _epoch_by_id(dataset)
        # The files now hold black images: the second epoch sees the photos only if it
        # reads the decoded images from the cache.
        kt.write_our_records(folder, black, labels, folds, extra=ids)
        second = _epoch_by_id(dataset)
        assert sorted(first) == sorted(second) == list(range(count))
        assert min(second[i].max() for i in range(count)) > 20.0
        if resize == "squash":
            # The same decoded image each epoch; the flip after the cache is drawn anew.
            same = [np.abs(second[i] - first[i]).max() < 1e-3 for i in range(count)]
            mirror = [np.abs(second[i] - first[i][:, ::-1]).max() < 1e-3 for i in range(count)]
            assert all(s or m for s, m in zip(same, mirror, strict=True))
            assert 4 <= sum(mirror) and 4 <= sum(same)
        else:
            # The crop is taken after the cache: another crop of each image each epoch (two
            # random crops of one image may by chance be close, never equal).
            changes = [np.abs(second[i] - first[i]).mean() for i in range(count)]
            assert min(changes) > 0.05 and sum(c > 1.0 for c in changes) >= count - 4
    kt.write_our_records(folder, kt.sample_images(count), labels, folds, extra=ids)
    plain = build_dataset(folder, 16, 24, False)
    cached = build_dataset(
        folder, 16, 24, False, cache=True if cache is True else str(tmp_path / "e")
    )
    # uint8 cache: pixels rounded to integers, nothing else
    np.testing.assert_allclose(_first(plain)[0], _first(cached)[0], atol=0.5)


def test_weights_soft_labels_and_multi_label(kt, tmp_path):
    images = kt.sample_images(4, size=24)
    extra = [{"weight": 0.5, "soft_label": [0.25, 0.75, 0.0]}, {}, {"weight": 2.0}, {}]
    folder = kt.write_our_records(
        str(tmp_path / "pseudo"), images, [[0], [1], [2], []], [-1] * 4, extra=extra
    )
    _, labels, weights = _first(build_dataset(folder, 16, 4, False, with_weights=True))
    np.testing.assert_allclose(weights, [0.5, 1.0, 2.0, 1.0])
    np.testing.assert_allclose(labels, [[0.25, 0.75, 0], [0, 1, 0], [0, 0, 1], [0, 0, 0]])
    multi = kt.write_our_records(
        str(tmp_path / "multi"), images, [[0, 2], [1], [], [0, 1, 2]], [0] * 4, "multi_label"
    )
    _, labels = _first(build_dataset(multi, 16, 4, False))
    np.testing.assert_allclose(labels, [[1, 0, 1], [0, 1, 0], [0, 0, 0], [1, 1, 1]])


def test_extra_records_join_training(kt, records, tmp_path):
    images = kt.sample_images(8, size=24, seed=3)
    soft = [{"soft_label": [0.1, 0.1, 0.8]} for _ in images]
    pseudo = kt.write_our_records(str(tmp_path / "p"), images, [[2]] * 8, [-1] * 8, extra=soft)
    dataset = build_dataset(
        records,
        16,
        32,
        True,
        seed=0,
        folds=[0],
        repeat=False,
        extra_records=pseudo,
        drop_remainder=False,
    )
    labels = np.concatenate([batch[1] for batch in dataset])
    assert len(labels) == 16  # 8 from fold 0 + 8 pseudo-labelled, each once
    assert np.isclose(labels[:, 2], 0.8).sum() == 8
    with pytest.raises(ValueError, match="never evaluation"):
        build_dataset(records, 16, 4, False, extra_records=pseudo)


def test_argument_errors_before_reading(records):
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        build_dataset(records, 16, 0, True)
    with pytest.raises(ValueError, match=r"resize: unknown value .* Choose one of"):
        build_dataset(records, 16, 4, True, resize="fit")
    with pytest.raises(ValueError, match="Unknown augmentation"):
        build_dataset("/does/not/exist", 16, 4, True, augment=[{"name": "Flip"}])
