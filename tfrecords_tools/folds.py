"""Fold assignment at write time: stratified (and grouped) k-fold from scikit-learn."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from tfrecords_tools.schema import TFRecordsError

_RARE = "__rare__"
_MAX_REGRESSION_BINS = 10


def stratification_keys(labels: Sequence[Sequence], task: str, num_folds: int) -> np.ndarray:
    """Returns one stratum key per sample.

    single_label: the class index. multi_label: the label set as a string ("0 3"); sets with
    fewer than `num_folds` samples are pooled into one stratum, since a stratum smaller than the
    fold count cannot be spread over the folds. regression: the quantile bin of the first target
    (up to 10 bins, at least `num_folds` samples per bin on average).
    """
    if task == "single_label":
        return np.asarray([label[0] for label in labels])
    if task == "multi_label":
        keys = pd.Series([" ".join(map(str, label)) for label in labels])
        counts = keys.map(keys.value_counts())
        return keys.where(counts >= num_folds, _RARE).to_numpy()
    first_target = np.asarray([label[0] for label in labels], dtype=np.float64)
    num_bins = max(1, min(_MAX_REGRESSION_BINS, len(first_target) // num_folds))
    bins = pd.qcut(first_target, q=num_bins, labels=False, duplicates="drop")
    return np.asarray(bins, dtype=np.int64)


def describe_folds(task: str, grouped: bool) -> str:
    """Returns how `assign_folds` splits, in words, for the manifest."""
    splitter = "StratifiedGroupKFold" if grouped else "StratifiedKFold"
    strata = {
        "single_label": "the class",
        "multi_label": "the label set (sets rarer than the fold count pooled)",
        "regression": "quantile bins of the first target",
    }[task]
    return f"{splitter} on {strata}"


def assign_folds(
    labels: Sequence[Sequence],
    task: str,
    num_folds: int,
    seed: int = 42,
    groups: Sequence[str] | None = None,
) -> np.ndarray:
    """Returns the fold index of each sample (int64 array), stratified by `stratification_keys`.

    Uses scikit-learn's `StratifiedKFold(shuffle=True, random_state=seed)`, or
    `StratifiedGroupKFold` when `groups` is given so that no group is split across folds.

    Example:

    >>> assign_folds([[0], [1]] * 5, "single_label", num_folds=5).tolist().count(0)
    2

    Args:
        labels: per sample, the class indices or regression targets (as in `SourceTable`).
        task: "single_label", "multi_label" or "regression".
        num_folds: number of folds, at least 2.
        seed: shuffling seed; the same inputs and seed give the same folds.
        groups: per sample, a group key (e.g. patient id), or None.
    """
    if num_folds < 2:
        raise TFRecordsError(f"folds must be at least 2; received folds={num_folds}")
    units = len(set(groups)) if groups is not None else len(labels)
    if num_folds > units:
        what = "groups" if groups is not None else "samples"
        raise TFRecordsError(f"folds={num_folds} is more than the {units} {what} to split")
    keys = stratification_keys(labels, task, num_folds)
    folds = np.full(len(labels), -1, dtype=np.int64)
    if groups is None:
        splitter = StratifiedKFold(n_splits=num_folds, shuffle=True, random_state=seed)
        splits = splitter.split(np.zeros(len(keys)), keys)
    else:
        splitter = StratifiedGroupKFold(n_splits=num_folds, shuffle=True, random_state=seed)
        splits = splitter.split(np.zeros(len(keys)), keys, groups=np.asarray(groups))
    for fold, (_, validation) in enumerate(splits):
        folds[validation] = fold
    return folds
