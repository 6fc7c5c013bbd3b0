"""Reading and validating the source table (a CSV or a folder tree) before any image is read."""

from __future__ import annotations

import hashlib
import io
import os
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import tensorflow as tf

from tfrecords_tools.schema import TASKS, TFRecordsError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp")
_MAX_LISTED = 5


@dataclass
class SourceTable:
    """The validated samples to write, one entry per row, with labels already mapped.

    Args:
        paths: full paths of the images, as they are opened.
        shown_paths: the paths as the user wrote them (relative ones stay relative), for messages.
        ids: unique sample ids.
        labels: per sample, class indices (classification) or float targets (regression);
            `[]` for unlabelled samples.
        label_texts: per sample, the label as text, for `folds.csv` (`""` when unlabelled).
        groups: per sample, the group key, or None without a group column.
        task: one of `TASKS`, or None for unlabelled samples (a test set).
        class_names: class names in index order (multi-label: label columns or sorted names);
            `[]` for regression and unlabelled samples.
        num_classes: number of classes, or of regression targets; 0 when unlabelled.
        source: where the table came from (`path`, `sha256`, `kind`), for the manifest.
    """

    paths: list[str]
    shown_paths: list[str]
    ids: list[str]
    labels: list[list]
    label_texts: list[str]
    groups: list[str] | None
    task: str | None
    class_names: list[str]
    num_classes: int
    source: dict


def _lines(rows: np.ndarray) -> str:
    """Formats row positions as CSV line numbers (the header is line 1)."""
    shown = ", ".join(str(int(row) + 2) for row in rows[:_MAX_LISTED])
    more = f" (and {len(rows) - _MAX_LISTED} more)" if len(rows) > _MAX_LISTED else ""
    return f"CSV line{'s' if len(rows) > 1 else ''} {shown}{more}"


def _load_csv(csv: str, columns: list[tuple[str, str | None]]) -> tuple[pd.DataFrame, str]:
    """Reads the CSV as text columns and checks that every named column exists."""
    try:
        if "://" in csv:
            with tf.io.gfile.GFile(csv, "rb") as f:
                data = f.read()
        else:  # plain open: a third of a millisecond less than GFile's exists + read
            with open(csv, "rb") as f:
                data = f.read()
    except (tf.errors.NotFoundError, FileNotFoundError):
        raise TFRecordsError(f"CSV file not found: {csv}") from None
    except IsADirectoryError:
        raise TFRecordsError(f"--csv must be a file, not a folder: {csv}") from None
    sha256 = hashlib.sha256(data).hexdigest()
    try:
        # Text columns keep "3" as "3" (not 3.0 when the column has a gap) and class names as given.
        frame = pd.read_csv(io.BytesIO(data), dtype=str)
    except pd.errors.EmptyDataError:
        raise TFRecordsError(f"CSV file is empty: {csv}") from None
    found = ", ".join(map(repr, frame.columns))
    for option, column in columns:
        if column is not None and column not in frame.columns:
            raise TFRecordsError(
                f"column {column!r} ({option}) not found in {csv}; columns found: {found}"
            )
    if len(frame) == 0:
        raise TFRecordsError(f"CSV file has a header but no rows: {csv}")
    return frame, sha256


def _check_filled(frame: pd.DataFrame, column: str, what: str, csv: str) -> None:
    # A cell of spaces is empty too: labels are stripped, and an empty class name is a typo.
    empty = np.flatnonzero((frame[column].isna() | (frame[column].str.strip() == "")).to_numpy())
    if len(empty):
        raise TFRecordsError(
            f"empty {what} in column {column!r} of {csv} at {_lines(empty)}; "
            "fill these cells or drop the rows"
        )


def _check_unique(ids: pd.Series, column: str) -> None:
    """Raises on duplicate ids, naming up to three of them with their CSV lines."""
    duplicated = ids[ids.duplicated(keep=False)]
    if len(duplicated):
        examples = []
        for value, rows in list(duplicated.groupby(duplicated, sort=False).groups.items())[:3]:
            examples.append(f"{value!r} at {_lines(np.asarray(rows))}")
        raise TFRecordsError(
            f"duplicate ids in column {column!r}: {'; '.join(examples)}; ids must be unique"
        )


def _natural_sorted(names: set[str]) -> list[str]:
    """Sorts class names numerically when all are integers ("2" before "10"), else as text."""
    if all(name.lstrip("-").isdigit() for name in names):
        return sorted(names, key=int)
    return sorted(names)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _infer_task(frame: pd.DataFrame, label_cols: Sequence[str], label_sep: str | None) -> str:
    """Multi-label for a separator or several 0/1 columns, regression for non-integer numbers."""
    if label_sep is not None:
        return "multi_label"
    values = frame[list(label_cols)]
    if not all(_is_number(values[column].iloc[0]) for column in label_cols):
        # Class names: the first row settles it without converting the whole column.
        return "regression" if len(label_cols) > 1 else "single_label"
    numbers = values.apply(pd.to_numeric, errors="coerce")
    all_numeric = not numbers.isna().to_numpy().any()
    if len(label_cols) > 1:
        if all_numeric and numbers.isin([0, 1]).to_numpy().all():
            return "multi_label"
        return "regression"
    if all_numeric and not np.all(np.mod(numbers.to_numpy(), 1) == 0):
        return "regression"
    return "single_label"


def _single_labels(column: pd.Series) -> tuple[list[list[int]], list[str], list[str]]:
    # Stripped: " a" and "a" typed by hand (or a padded export) are one class, not two.
    names = column.str.strip().tolist()  # a list: iterating a Series costs 15 us per item
    class_names = _natural_sorted(set(names))
    index = {name: i for i, name in enumerate(class_names)}
    return [[index[name]] for name in names], names, class_names


def _separated_labels(column: pd.Series, sep: str) -> tuple[list[list[int]], list[str], list[str]]:
    name_lists = [
        [name for name in map(str.strip, value.split(sep)) if name] for value in column.tolist()
    ]
    class_names = _natural_sorted({name for names in name_lists for name in names})
    index = {name: i for i, name in enumerate(class_names)}
    labels = [sorted({index[name] for name in names}) for names in name_lists]
    texts = [" ".join(class_names[i] for i in label) for label in labels]
    return labels, texts, class_names


def _column_labels(
    frame: pd.DataFrame, label_cols: Sequence[str], csv: str
) -> tuple[list[list[int]], list[str], list[str]]:
    numbers = frame[list(label_cols)].apply(pd.to_numeric, errors="coerce")
    for column in label_cols:
        bad = np.flatnonzero(~numbers[column].isin([0, 1]).to_numpy())
        if len(bad):
            raise TFRecordsError(
                f"multi-label column {column!r} of {csv} must hold 0 or 1; found "
                f"{frame[column].iloc[bad[0]]!r} at {_lines(bad)}"
            )
    positives = numbers.to_numpy().astype(bool)
    labels = [np.flatnonzero(row).tolist() for row in positives]
    texts = [" ".join(label_cols[i] for i in label) for label in labels]
    return labels, texts, list(label_cols)


def _float_labels(
    frame: pd.DataFrame, label_cols: Sequence[str], csv: str
) -> tuple[list[list[float]], list[str], list[str]]:
    numbers = frame[list(label_cols)].apply(pd.to_numeric, errors="coerce")
    for column in label_cols:
        bad = np.flatnonzero(numbers[column].isna().to_numpy())
        if len(bad):
            raise TFRecordsError(
                f"regression target column {column!r} of {csv} holds a value that is not a "
                f"number: {frame[column].iloc[bad[0]]!r} at {_lines(bad)}"
            )
    values = numbers.to_numpy(dtype=np.float64)
    texts = [" ".join(repr(float(v)) for v in row) for row in values]
    return values.tolist(), texts, []


def _default_ids(shown_paths: list[str]) -> list[str]:
    """File stems; where two files share a stem (cat/1.jpg, dog/1.jpg), the paths without
    extension; where those collide too (a.png, a.jpg), the paths as written."""
    paths = [p.replace("\\", "/") for p in shown_paths]
    stems = [_stem(p.rpartition("/")[2]) for p in paths]
    if len(set(stems)) == len(stems):
        return stems
    without_extension = [posixpath.splitext(p)[0] for p in paths]
    if len(set(without_extension)) == len(without_extension):
        return without_extension
    return paths


def _stem(name: str) -> str:
    """`posixpath.splitext(name)[0]` for a bare file name, at a third of its cost."""
    stem, dot, _ = name.rpartition(".")
    return stem if dot and stem.strip(".") else name


def _labels(
    frame: pd.DataFrame, label_cols: list[str], task: str, label_sep: str | None, csv: str
) -> tuple[list[list], list[str], list[str]]:
    """Labels, their texts and the class names of a CSV, for a task already known."""
    if label_sep is not None and task != "multi_label":
        raise TFRecordsError(f"label_sep (--label-sep) is for multi-label data; got task {task!r}")
    if task == "single_label" and len(label_cols) > 1:
        raise TFRecordsError(
            f"task 'single_label' takes one label column, got {label_cols}; "
            "use task 'multi_label' for several 0/1 columns"
        )
    if task == "regression":
        return _float_labels(frame, label_cols, csv)
    if task == "multi_label" and label_sep is not None:
        return _separated_labels(frame[label_cols[0]], label_sep)
    if task == "multi_label":
        return _column_labels(frame, label_cols, csv)
    return _single_labels(frame[label_cols[0]])


def read_csv_source(
    csv: str,
    *,
    image_col: str = "path",
    label_cols: Sequence[str] | None = ("label",),
    id_col: str | None = None,
    group_col: str | None = None,
    task: str | None = None,
    label_sep: str | None = None,
    optional_labels: bool = False,
) -> SourceTable:
    """Reads and validates a CSV of image paths and labels; image paths are relative to its folder.

    Every problem (missing file or column, empty cells, duplicate ids, bad label values) raises
    `TFRecordsError` naming the column and CSV line numbers; no image is opened here. Class
    names are stripped of surrounding spaces (" a" and "a" are one class). `label_cols=None`
    reads no labels (a test set); so does `optional_labels=True` when the CSV lacks the label
    columns (what `tfrecords-tools write` does when --label-col is omitted).
    """
    label_cols = [label_cols] if isinstance(label_cols, str) else label_cols
    if task is not None and task not in TASKS:
        raise TFRecordsError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    if label_cols is not None and not label_cols:
        raise TFRecordsError("no label column given; pass at least one --label-col")
    columns = [("--image-col", image_col), ("--id-col", id_col), ("--group-col", group_col)]
    frame, sha256 = _load_csv(csv, columns)
    if label_cols is not None:
        missing = [column for column in label_cols if column not in frame.columns]
        if missing and optional_labels:
            label_cols = None
        elif missing:
            found = ", ".join(map(repr, frame.columns))
            raise TFRecordsError(
                f"column {missing[0]!r} (--label-col) not found in {csv}; columns found: "
                f"{found}; for records without labels (a test set) omit --label-col "
                "(label_cols=None)"
            )
    if label_cols is None and (task is not None or label_sep is not None):
        raise TFRecordsError("task and label_sep (--task, --label-sep) need label columns")
    _check_filled(frame, image_col, "image path", csv)
    for column in label_cols or []:
        _check_filled(frame, column, "label", csv)
    if group_col is not None:
        _check_filled(frame, group_col, "group", csv)
    if id_col is not None:
        _check_filled(frame, id_col, "id", csv)
        _check_unique(frame[id_col], id_col)
    if label_cols is None:
        task = None
        labels, texts, class_names = [[] for _ in range(len(frame))], [""] * len(frame), []
    else:
        task = task or _infer_task(frame, label_cols, label_sep)
        labels, texts, class_names = _labels(frame, label_cols, task, label_sep, csv)
    shown_paths = frame[image_col].tolist()
    root = posixpath.dirname(csv) if "://" in csv else _local_dir(csv)
    root = root.rstrip("/") + "/"
    paths = [p if _is_absolute(p) else root + p for p in shown_paths]
    ids = frame[id_col].tolist() if id_col is not None else _default_ids(shown_paths)
    if id_col is None and len(set(ids)) != len(ids):  # the set: 1 ms less on 2,000 rows
        _check_unique(pd.Series(ids), f"{image_col} (ids from the file names)")
    return SourceTable(
        paths=paths,
        shown_paths=shown_paths,
        ids=ids,
        labels=labels,
        label_texts=texts,
        groups=frame[group_col].tolist() if group_col is not None else None,
        task=task,
        class_names=class_names,
        num_classes=len(label_cols or []) if task == "regression" else len(class_names),
        source={"kind": "csv", "path": csv, "sha256": sha256},
    )


def _local_dir(path: str) -> str:
    return os.path.dirname(os.path.abspath(path)).replace(os.sep, "/")


def _is_absolute(path: str) -> bool:
    return "://" in path or path.startswith("/") or (len(path) > 2 and path[1:3] in (":\\", ":/"))


def _check_unique_folder_ids(ids: list[str], shown_paths: list[str], folder: str) -> None:
    """Raises when two images differ only by extension (`a/x.jpg`, `a/x.png`): one id, which
    could land in two folds and would make predictions and `folds.csv` ambiguous."""
    files_of: dict[str, list[str]] = {}
    for sample_id, path in zip(ids, shown_paths, strict=True):
        files_of.setdefault(sample_id, []).append(path)
    clashes = [paths for paths in files_of.values() if len(paths) > 1]
    if clashes:
        shown = "; ".join(" and ".join(paths) for paths in clashes[:3])
        more = f" (and {len(clashes) - 3} more)" if len(clashes) > 3 else ""
        raise TFRecordsError(
            f"{len(clashes)} ids in {folder} name more than one image: {shown}{more}; the id "
            "is the path without its extension, so rename or remove one file of each pair"
        )


def read_folder_source(folder: str, task: str | None = None) -> SourceTable:
    """Reads a folder tree with one sub-folder per class (sub-sub-folders belong to their class).

    Files whose extension is not one of `IMAGE_EXTENSIONS`, hidden files, and files at the top
    level are ignored (and counted in the manifest's `source.ignored_files`). The id of an image
    is its path without extension (`cat/001`); two images with one id are refused. Class names
    are the sub-folder names stripped of surrounding spaces.
    """
    if task not in (None, "single_label"):
        raise TFRecordsError(f"a folder tree gives single-label classes; got task {task!r}")
    if not tf.io.gfile.isdir(folder):
        raise TFRecordsError(f"folder not found: {folder}")
    folder = folder.rstrip("/")
    shown_paths, ignored = [], 0
    for root, _dirs, files in tf.io.gfile.walk(folder):
        relative_root = root[len(folder) :].strip("/")
        for name in sorted(files):
            keep = relative_root and not name.startswith(".")
            if keep and name.lower().endswith(IMAGE_EXTENSIONS):
                shown_paths.append(f"{relative_root}/{name}")
            else:
                ignored += 1
    if not shown_paths:
        raise TFRecordsError(
            f"no images found in {folder}: expected one sub-folder per class holding "
            f"files ending in {', '.join(IMAGE_EXTENSIONS)}"
        )
    shown_paths.sort()
    ids = [posixpath.splitext(p)[0] for p in shown_paths]
    _check_unique_folder_ids(ids, shown_paths, folder)
    class_column = pd.Series([p.split("/", 1)[0] for p in shown_paths])
    labels, texts, class_names = _single_labels(class_column)
    listing = "\n".join(shown_paths).encode("utf-8")
    return SourceTable(
        paths=[f"{folder}/{p}" for p in shown_paths],
        shown_paths=shown_paths,
        ids=ids,
        labels=labels,
        label_texts=texts,
        groups=None,
        task="single_label",
        class_names=class_names,
        num_classes=len(class_names),
        source={
            "kind": "folder",
            "path": folder,
            "sha256": hashlib.sha256(listing).hexdigest(),
            "ignored_files": ignored,
        },
    )
