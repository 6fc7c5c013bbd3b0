"""`write_records`: a CSV or folder tree in; sharded TFRecords, folds and a manifest out."""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from tfrecords_tools.commit import OLD_PREFIX, commit, make_staging, remove_tree
from tfrecords_tools.folds import assign_folds, describe_folds
from tfrecords_tools.manifest import build_manifest, folds_csv_bytes, save_outputs, summary_text
from tfrecords_tools.schema import FOLDS_CSV_NAME, MANIFEST_NAME, SHARD_SUFFIX, TFRecordsError
from tfrecords_tools.shards import (
    ShardResult,
    estimate_record_bytes,
    make_jobs,
    plan_shards,
    run_jobs,
    too_many_bad,
)
from tfrecords_tools.sources import SourceTable, read_csv_source, read_folder_source


def _shard_pattern(prefix: str) -> re.Pattern:
    return re.compile(re.escape(prefix) + r"-f-?\d+-\d{5}" + re.escape(SHARD_SUFFIX) + "$")


def _temporary_files(out: str) -> list[str]:
    """Partial files and discarded datasets that an interrupted run of an earlier version left."""
    names = tf.io.gfile.listdir(out)
    return [n for n in names if re.match(r"\..+\.tmp-\d+$", n) or n.startswith(OLD_PREFIX)]


def _check_out(out: str, prefix: str, overwrite: bool) -> list[str]:
    """Refuses a folder holding a finished dataset (unless overwrite); returns the files that
    the new dataset replaces.

    Our own shard names without a manifest are leftovers of an interrupted run and are replaced;
    other `.tfrec` files are somebody else's and are only replaced with overwrite.
    """
    if not tf.io.gfile.exists(out):
        return []
    if not tf.io.gfile.isdir(out):
        raise TFRecordsError(f"--out must be a folder, but {out} is a file; choose another --out")
    names = tf.io.gfile.listdir(out)
    ours = _shard_pattern(prefix)
    foreign = [n for n in names if n.endswith(SHARD_SUFFIX) and not ours.match(n)]
    if not overwrite and MANIFEST_NAME in names:
        raise TFRecordsError(
            f"{out} already holds a dataset ({MANIFEST_NAME}); pass overwrite=True "
            "(--overwrite) to replace it, or choose another --out"
        )
    if not overwrite and foreign:
        raise TFRecordsError(
            f"{out} holds {len(foreign)} other .tfrec files (e.g. {foreign[0]}); pass "
            "overwrite=True (--overwrite) to remove them, or choose another --out"
        )
    removable = [n for n in names if ours.match(n) or n in (MANIFEST_NAME, FOLDS_CSV_NAME)]
    return sorted(set(removable + foreign + _temporary_files(out)))


def _check_options(
    csv: str | None,
    from_folder: str | None,
    folds: int | None,
    workers: int,
    shard_mb: float,
    resize: int | None,
    quality: int,
    max_bad: float,
    sizes: Sequence[int],
) -> None:
    if (csv is None) == (from_folder is None):
        raise TFRecordsError("give exactly one source: csv=... (--csv) or from_folder=...")
    checks = [
        (
            folds is None or folds >= 2,
            f"folds (--folds) must be at least 2, or omitted for no folds; received folds={folds}",
        ),
        (workers >= 1, f"workers must be at least 1; received workers={workers}"),
        (shard_mb > 0, f"shard_mb must be positive; received shard_mb={shard_mb}"),
        (resize is None or resize >= 1, f"resize must be a positive size; received {resize}"),
        (1 <= quality <= 100, f"quality must be in 1..100; received quality={quality}"),
        (
            all(isinstance(s, int) and s >= 1 for s in sizes) and len(set(sizes)) == len(sizes),
            f"sizes (--sizes) must be distinct positive sizes in pixels; received {list(sizes)}",
        ),
        (0 <= max_bad <= 1, f"max_bad is a fraction in [0, 1]; received max_bad={max_bad}"),
    ]
    for ok, message in checks:
        if not ok:
            raise TFRecordsError(message)


def write_records(
    out: str,
    *,
    csv: str | None = None,
    from_folder: str | None = None,
    image_col: str = "path",
    label_cols: Sequence[str] | None = ("label",),
    optional_labels: bool = False,
    id_col: str | None = None,
    group_col: str | None = None,
    task: str | None = None,
    label_sep: str | None = None,
    folds: int | None = None,
    seed: int = 42,
    workers: int = 1,
    shard_mb: float = 100.0,
    resize: int | None = None,
    quality: int = 95,
    sizes: Sequence[int] | None = None,
    overwrite: bool = False,
    max_bad: float = 0.01,
    prefix: str = "train",
    progress: bool = True,
) -> dict:
    """Writes images and labels from a CSV or a folder tree into sharded TFRecords.

    Every problem with the table is raised before an image is read. Bad images (missing, empty,
    truncated, not an image) are skipped and listed in the manifest's `skipped`; the write fails
    only when more than `max_bad` of them are bad. Each shard holds one fold. The dataset is
    written into a hidden sibling folder of `out` and swapped in when complete (manifest
    last), so an interrupted or failed write, even `kill -9`, leaves the previous dataset in
    `out` as it was (see `tfrecords_tools.commit`). Record format: docs/design.md.

    Example:

    ```python
    manifest = write_records("data/digits", csv="digits/labels.csv", folds=5)
    manifest["counts"]["per_fold"]  # {"0": 360, "1": 360, ...}
    ```

    Args:
        out: output folder (local or any `tf.io.gfile` scheme, e.g. `gs://`).
        csv: CSV with one row per image; relative image paths are relative to its folder.
        from_folder: folder tree with one sub-folder per class (instead of `csv`).
        image_col: CSV column with the image paths.
        label_cols: label column(s): one class name or number column, several 0/1 columns
            (multi-label) or float columns (regression); None for records without labels (a
            test set: no `label` feature, `"labeled": false` in the manifest, no folds).
        optional_labels: write without labels, instead of failing, when the CSV lacks the
            label columns (the CLI when --label-col is omitted).
        id_col: column of unique sample ids; default: the file stem.
        group_col: column of groups kept within one fold (StratifiedGroupKFold).
        task: "single_label", "multi_label" or "regression"; inferred when None.
        label_sep: separator of several class names in one label column (multi-label).
        folds: number of folds to assign, or None for fold -1 everywhere.
        seed: seed of the fold split and of the order of records within shards.
        workers: worker processes, each writing whole shards.
        shard_mb: target shard size in megabytes.
        resize: when set, the longer side is scaled to this many pixels and the image is
            re-encoded as JPEG; when None the original bytes are stored.
        quality: JPEG quality of re-encoded images and copies.
        sizes: also store, next to each JPEG image, re-encoded JPEG copies whose shorter side
            is each of these sizes (aspect kept; a size not below the image's shorter side is
            left out, never upscaled), as `image_<size>` features; `build_dataset` decodes the
            smallest copy that covers what it needs (a resolution curriculum's small stages).
        overwrite: replace a dataset already in `out`.
        max_bad: largest tolerated fraction of bad images.
        prefix: shard file name prefix.
        progress: print progress and a summary to stderr.

    Returns:
        The manifest, as written to `<out>/manifest.json`.
    """
    start = time.perf_counter()
    sizes = sorted(sizes or ())
    _check_options(csv, from_folder, folds, workers, shard_mb, resize, quality, max_bad, sizes)
    if from_folder is not None and label_cols is None:
        raise TFRecordsError("a folder tree's sub-folders are its labels: --no-labels is for --csv")
    to_replace = _check_out(out, prefix, overwrite)
    if csv is not None:
        table = read_csv_source(
            csv,
            image_col=image_col,
            label_cols=label_cols,
            id_col=id_col,
            group_col=group_col,
            task=task,
            label_sep=label_sep,
            optional_labels=optional_labels,
        )
    else:
        table = read_folder_source(from_folder, task)
    if folds and table.task is None:
        raise TFRecordsError(
            "folds (--folds) are stratified by label; records without labels are written "
            "without folds: omit --folds"
        )
    fold_of = np.full(len(table.paths), -1, dtype=np.int64)
    if folds:
        fold_of = assign_folds(table.labels, table.task, folds, seed, table.groups)
    options = {
        "shard_mb": shard_mb,
        "resize": resize,
        "quality": quality,
        "sizes": sizes,
        "seed": seed,
        "folds": folds,
        "fold_method": describe_folds(table.task, table.groups is not None) if folds else None,
        "workers": workers,
        "max_bad": max_bad,
        "prefix": prefix,
        "image_col": image_col if csv is not None else None,
        "label_cols": list(label_cols) if csv is not None and table.task is not None else None,
        "label_sep": label_sep,
        "id_col": id_col,
        "group_col": group_col,
    }
    record_bytes = estimate_record_bytes(table, resize, quality, seed, sizes)
    plan = plan_shards(fold_of, record_bytes, shard_mb, workers, seed)
    staging = make_staging(out)
    jobs = make_jobs(table, plan, staging, prefix, resize, quality, sizes)
    try:
        results = run_jobs(jobs, workers, max_bad, len(table.paths), progress)
        manifest = _finish(staging, table, fold_of, folds or 0, results, options, max_bad)
        commit(staging, out, to_replace)
    except BaseException:
        remove_tree(staging)
        raise
    if progress:
        print(summary_text(manifest, out, time.perf_counter() - start), file=sys.stderr)
    return manifest


def _finish(
    out: str,
    table: SourceTable,
    fold_of: np.ndarray,
    num_folds: int,
    results: list[ShardResult],
    options: dict,
    max_bad: float,
) -> dict:
    """Checks the bad-file budget, then writes folds.csv and the manifest (last)."""
    results = sorted(results, key=lambda result: (result.fold, result.file))
    skipped = [item for result in results for item in result.skipped]
    message = too_many_bad(skipped, len(table.paths), max_bad, final=True)
    if message:
        raise TFRecordsError(message)
    written = np.sort(np.asarray([row for r in results for row in r.rows], dtype=np.int64))
    shards = [
        {"file": r.file, "fold": r.fold, "count": r.count, "bytes": r.bytes}
        for r in results
        if r.count
    ]
    sizes = {
        "height": [h for r in results for h in r.heights],
        "width": [w for r in results for w in r.widths],
        "format": [f for r in results for f in r.formats],
        "copies": {s: sum(r.copies.get(s, 0) for r in results) for s in options["sizes"]},
    }
    manifest = build_manifest(table, fold_of, num_folds, written, shards, skipped, sizes, options)
    save_outputs(out, manifest, folds_csv_bytes(table, fold_of, written))
    return manifest
