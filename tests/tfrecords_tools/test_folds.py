"""Fold assignment: stratified, grouped, binned for regression, written into the records."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tfrecords_tools import TFRecordsError, assign_folds, write_records


def test_class_counts_per_fold_are_within_one_of_ideal():
    rng = np.random.default_rng(1)
    classes = rng.integers(0, 4, 203)
    folds = assign_folds([[c] for c in classes], "single_label", num_folds=5, seed=3)
    for c in range(4):
        per_fold = np.bincount(folds[classes == c], minlength=5)
        ideal = (classes == c).sum() / 5
        assert np.all(np.abs(per_fold - ideal) <= 1), (c, per_fold, ideal)


def test_folds_are_seeded():
    labels = [[i % 3] for i in range(60)]
    first = assign_folds(labels, "single_label", 4, seed=7)
    assert np.array_equal(first, assign_folds(labels, "single_label", 4, seed=7))
    assert not np.array_equal(first, assign_folds(labels, "single_label", 4, seed=8))


def test_a_group_is_never_split_across_folds():
    rng = np.random.default_rng(2)
    groups = [f"patient{g}" for g in rng.integers(0, 30, 150)]
    labels = [[int(rng.integers(0, 2))] for _ in groups]
    folds = assign_folds(labels, "single_label", 5, seed=0, groups=groups)
    frame = pd.DataFrame({"group": groups, "fold": folds})
    assert frame.groupby("group")["fold"].nunique().max() == 1
    assert frame["fold"].nunique() == 5


def test_regression_is_stratified_on_quantile_bins():
    targets = np.random.default_rng(4).exponential(size=200)
    folds = assign_folds([[t] for t in targets], "regression", 4, seed=0)
    order = np.argsort(targets)
    # Each tenth of the sorted targets spreads over the 4 folds evenly (5 each, +-1).
    for decile in np.array_split(order, 10):
        assert np.all(np.abs(np.bincount(folds[decile], minlength=4) - 5) <= 1)


def test_multi_label_stratifies_on_the_label_set():
    sets = [[0], [0, 1], [1, 2], [2]] * 10 + [[0, 2]]
    folds = assign_folds(sets, "multi_label", 5, seed=0)
    for label_set in ([0], [0, 1], [1, 2], [2]):
        rows = [i for i, s in enumerate(sets) if s == label_set]
        assert np.array_equal(np.bincount(folds[rows], minlength=5), [2] * 5)


def test_too_many_folds_is_an_error():
    with pytest.raises(TFRecordsError, match="folds=5 is more than the 3 groups"):
        assign_folds([[0]] * 9, "single_label", 5, groups=["a", "b", "c"] * 3)
    with pytest.raises(TFRecordsError, match="at least 2"):
        assign_folds([[0]] * 9, "single_label", 1)


def test_written_groups_stay_in_one_fold_and_shard(make_digits, read_back, tmp_path):
    csv = make_digits(40)
    manifest = write_records(
        str(tmp_path / "out"), csv=csv, id_col="id", group_col="group", folds=3, progress=False
    )
    assert manifest["options"]["fold_method"].startswith("StratifiedGroupKFold")
    frame = pd.read_csv(csv).set_index("id")
    records = read_back(str(tmp_path / "out"))
    fold_of_group = {}
    for sample_id, record in records.items():
        group = frame.loc[sample_id, "group"]
        assert fold_of_group.setdefault(group, record["fold"]) == record["fold"]
    assert len(set(fold_of_group.values())) == 3
