"""Finds TFRecord files and their schema: our folders with `manifest.json`, or foreign records.

Every file access goes through `tf.io.gfile`, so `gs://` buckets (TPU) work like local disk.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tensorflow as tf

from tfrecords_tools.schema import MANIFEST_NAME as MANIFEST
from tfrecords_tools.schema import (
    TASKS,  # noqa: F401  (kerastricks.data.foreign imports it here)
    TFRecordsError,
    check_manifest,
)
from tfrecords_tools.schema import manifest_labeled as _manifest_labeled

DEFAULT_KEYS = {
    "image": "image",
    "label": "label",
    "id": "id",
    "fold": "fold",
    "soft_label": "soft_label",
    "weight": "weight",
}
# Entries of `keys` that describe the label rather than name a feature.
_KEY_OPTIONS = ("task", "label_dtype")
_RECORD_PATTERNS = ("*.tfrec", "*.tfrecord", "*.tfrecords")


def copy_key(size: int) -> str:
    """The feature of the stored JPEG copy whose shorter side is `size` (`image_128`)."""
    return f"image_{size}"


@dataclass
class RecordSource:
    """A resolved set of TFRecord files with the schema needed to parse them.

    Example:
    ```python
    source = resolve_records("data/digits/tfrecords")
    train_files = source.files_for(exclude_folds=[0])
    ```

    Args:
        path: what the user gave (for messages).
        files: the record files, sorted.
        task: "single_label", "multi_label" or "regression" (records without labels: the
            task the caller gave, default "single_label").
        num_classes: classes, or regression targets; for records without labels the number
            the caller gave (the trained model's outputs), else 0 (unknown).
        class_names: class names ([] for regression or when unknown).
        keys: feature name per role (image, label, id, fold, soft_label, weight); a role
            whose feature is absent from the records maps to None.
        label_dtype: tf.int64 (class indices) or tf.float32 (regression targets).
        shard_folds: fold of each file when the manifest says so, else None.
        manifest: the parsed manifest, or None for foreign records.
        labeled: False for records without labels (a test set written without --label-col,
            or foreign records with `keys={"label": None}`): their targets are zeros, so
            neither training nor accuracy may use them.
        stored_sizes: shorter sides of the re-encoded JPEG copies stored next to the image
            (`image_<size>` features, `tfrecords-tools write --sizes`), ascending; [] for
            records without copies and for foreign records.
    """

    path: str
    files: list[str]
    task: str
    num_classes: int
    class_names: list[str]
    keys: dict[str, str | None]
    label_dtype: tf.DType
    shard_folds: dict[str, int] | None = None
    manifest: dict[str, Any] | None = None
    labeled: bool = True
    stored_sizes: list[int] = field(default_factory=list)
    _counts: dict[str, int] = field(default_factory=dict, repr=False)

    def check_shards(self) -> None:
        """Raises naming each shard whose size differs from the manifest's (a truncated or
        partly copied file), with what to do. One `stat` per shard; shards of manifests that
        record no size (older writers, hand-made ones) are not checked.
        """
        if self.manifest is None:
            return
        folder = self.files[0].rsplit("/", 1)[0] if self.files else self.path
        wrong = []
        for shard in self.manifest["shards"]:
            expected = int(shard.get("bytes") or 0)
            if expected <= 0:  # 0: no size recorded; a written shard is never empty
                continue
            path = _join(folder, shard["file"])
            actual = tf.io.gfile.stat(path).length
            if actual != expected:
                wrong.append(f"{path} ({actual} bytes, the manifest says {expected})")
        if wrong:
            raise TFRecordsError(
                f"Records {self.path}: {len(wrong)} shard(s) differ in size from "
                f"{MANIFEST}, so they are truncated or corrupt: {'; '.join(wrong[:5])}"
                f"{' ...' if len(wrong) > 5 else ''}. Run `tfrecords-tools verify {folder}` "
                "to list the bad records, then copy the folder again or rewrite it with "
                "`tfrecords-tools write ... --overwrite`."
            )

    @property
    def num_records(self) -> int:
        """Number of records: from the manifest, else counted by reading (once)."""
        return self.count()

    @property
    def folds(self) -> list[int] | None:
        """The folds present (from the manifest), or None when unknown without reading."""
        if self.shard_folds is None:
            return None
        return sorted({f for f in self.shard_folds.values() if f >= 0})

    def files_for(
        self, folds: Sequence[int] | None = None, exclude_folds: Sequence[int] | None = None
    ) -> list[str]:
        """The files holding the requested folds (all files when folds live in the records)."""
        folds, exclude_folds = self.check_folds(folds, exclude_folds)
        if self.shard_folds is None:
            return list(self.files)
        return [f for f in self.files if _keep(self.shard_folds[f], folds, exclude_folds)]

    def needs_record_filter(
        self, folds: Sequence[int] | None, exclude_folds: Sequence[int] | None
    ) -> bool:
        """True when folds must be selected record by record (no per-shard fold known)."""
        return self.shard_folds is None and (folds is not None or exclude_folds is not None)

    def count(
        self,
        folds: Sequence[int] | None = None,
        exclude_folds: Sequence[int] | None = None,
        *,
        read: bool = True,
    ) -> int | None:
        """Records in the selected folds: from the manifest's shard counts, else by reading
        (once; with `read=False`, None instead of a pass over the files)."""
        folds, exclude_folds = self.check_folds(folds, exclude_folds)
        if self.manifest is not None:
            shards = self.manifest["shards"]
            if all("count" in s for s in shards):
                return sum(
                    int(s["count"]) for s in shards if _keep(s["fold"], folds, exclude_folds)
                )
        if not read:
            return None
        cache_key = f"{folds}|{exclude_folds}"
        if cache_key not in self._counts:
            dataset = tf.data.TFRecordDataset(self.files_for(folds, exclude_folds))
            if self.needs_record_filter(folds, exclude_folds):
                fold_key = self.keys["fold"]
                spec = {fold_key: tf.io.FixedLenFeature([], tf.int64)}
                dataset = dataset.map(lambda r: tf.io.parse_single_example(r, spec)[fold_key])
                dataset = dataset.filter(lambda f: fold_predicate(f, folds, exclude_folds))
            self._counts[cache_key] = int(dataset.reduce(0, lambda n, _: n + 1).numpy())
        return self._counts[cache_key]

    def fold_counts(self) -> dict[int, int]:
        """Records per fold (-1: no fold), from the manifest, else by reading the fold feature."""
        if self.manifest is not None and "counts" in self.manifest:
            per_fold = self.manifest["counts"].get("per_fold", {})
            if per_fold:
                return {int(k): int(v) for k, v in per_fold.items()}
        if self.keys.get("fold") is None:
            return {-1: self.num_records}
        key = self.keys["fold"]
        spec = {key: tf.io.FixedLenFeature([], tf.int64, default_value=-1)}
        dataset = tf.data.TFRecordDataset(self.files).map(
            lambda r: tf.io.parse_single_example(r, spec)[key]
        )
        values = np.fromiter(dataset.as_numpy_iterator(), dtype=np.int64)
        folds, counts = np.unique(values, return_counts=True)
        return {int(f): int(c) for f, c in zip(folds, counts, strict=True)}

    def check_folds(
        self, folds: Sequence[int] | None, exclude_folds: Sequence[int] | None
    ) -> tuple[list[int] | None, list[int] | None]:
        """Normalises a fold selection; raises naming the path when a fold does not exist."""
        folds = _int_list(folds, "folds")
        exclude_folds = _int_list(exclude_folds, "exclude_folds")
        if folds is None and exclude_folds is None:
            return folds, exclude_folds
        if self.shard_folds is None and self.keys["fold"] is None:
            raise TFRecordsError(
                f"Records {self.path} have no fold feature, so folds cannot be selected. "
                "Name it with keys={'fold': ...}, or write the records with folds."
            )
        known = self.folds
        if known is not None:
            missing = sorted((set(folds or []) | set(exclude_folds or [])) - set(known))
            if missing:
                raise TFRecordsError(
                    f"Fold(s) {missing} do not exist in records {self.path}; "
                    f"available folds: {known}."
                )
        return folds, exclude_folds


@contextlib.contextmanager
def read_errors_named(*sources: RecordSource) -> Iterator[None]:
    """Re-raises a `DataLossError` from reading records (TensorFlow's names no file) with the
    records' folder, the shards whose size is wrong, and what to do.

    Example:
    ```python
    with read_errors_named(source):
        model.fit(build_dataset(source, 224, 32, training=True), ...)
    ```
    """
    try:
        yield
    except tf.errors.DataLossError as error:
        suspects = []
        for source in sources:
            try:
                source.check_shards()
            except ValueError as bad:
                suspects.append(str(bad))
            except tf.errors.OpError:
                suspects.append(f"Records {source.path} cannot be listed any more.")
        if not suspects:
            for source in sources:
                shown = ", ".join(source.files[:3]) + (" ..." if len(source.files) > 3 else "")
                suspects.append(
                    f"Records {source.path} ({shown}): run `tfrecords-tools verify "
                    f"{source.path}` to find the corrupt shard, then rewrite or copy it again."
                )
        message = f"Reading TFRecords failed ({error.message.strip()}). " + " ".join(suspects)
        raise tf.errors.DataLossError(error.node_def, error.op, message) from error


def fold_predicate(
    fold: tf.Tensor, folds: list[int] | None, exclude_folds: list[int] | None
) -> tf.Tensor:
    """Graph predicate: `fold` is in `folds` (when given) and not in `exclude_folds`."""
    keep = tf.constant(True)
    if folds is not None:
        keep = tf.reduce_any(tf.equal(fold, tf.constant(folds, tf.int64)))
    if exclude_folds:
        keep = keep & ~tf.reduce_any(tf.equal(fold, tf.constant(exclude_folds, tf.int64)))
    return keep


def _keep(fold: int, folds: list[int] | None, exclude_folds: list[int] | None) -> bool:
    return (folds is None or fold in folds) and (exclude_folds is None or fold not in exclude_folds)


def _int_list(values: Sequence[int] | int | None, name: str) -> list[int] | None:
    if values is None:
        return None
    if isinstance(values, int):
        return [values]
    try:
        return [int(v) for v in values]
    except (TypeError, ValueError) as error:
        raise TFRecordsError(
            f"{name} must be a list of fold indices. Received: {values!r}"
        ) from error


def resolve_records(
    records: str | Sequence[str] | RecordSource,
    keys: dict[str, Any] | None = None,
    *,
    num_classes: int | None = None,
    task: str | None = None,
    label_dtype: str | None = None,
) -> RecordSource:
    """Resolves a folder with `manifest.json`, a list of files, or a glob into a RecordSource.

    Our folders (written by `tfrecords_tools`) carry their schema in `manifest.json`. Foreign
    records (Kaggle layouts) are described by `keys`, e.g.
    `{"image": "image_raw", "label": "target", "id": "image_name"}` (`"label": None` for
    unlabelled records); `keys` may also hold `task` and `label_dtype`. The first record is
    read to check the keys and to infer the label type; `num_classes` is needed for integer
    labels of foreign records. Records without labels (`source.labeled` False) take
    `num_classes` and `task` from the caller (the trained model's), since they hold none.

    Args:
        records: folder, `manifest.json` path, file path, glob, or a list of those.
        keys: feature names per role, for foreign records.
        num_classes: number of classes (foreign or unlabelled records).
        task: "single_label", "multi_label" or "regression" (foreign or unlabelled records).
        label_dtype: "int64" or "float32" (foreign records; inferred when None).
    """
    if isinstance(records, RecordSource):
        if not records.labeled and num_classes and num_classes != records.num_classes:
            # Unlabelled records know no class count: the caller's (the model's) is the one.
            return dataclasses.replace(records, num_classes=int(num_classes), _counts={})
        return records
    keys = dict(keys or {})
    task = task or keys.pop("task", None)
    label_dtype = label_dtype or keys.pop("label_dtype", None)
    unknown = sorted(set(keys) - set(DEFAULT_KEYS) - set(_KEY_OPTIONS))
    if unknown:
        raise TFRecordsError(
            f"Unknown entries {unknown} in keys; accepted: "
            f"{list(DEFAULT_KEYS) + list(_KEY_OPTIONS)}."
        )
    manifest_path = _manifest_path(records)
    if manifest_path is not None:
        return _from_manifest(manifest_path, records, keys, num_classes, task)
    files = _glob_files(records)
    from kerastricks.data.foreign import foreign_source  # it builds on RecordSource

    return foreign_source(str(records), files, keys, num_classes, task, label_dtype)


def _manifest_path(records: str | Sequence[str]) -> str | None:
    if not isinstance(records, str):
        return None
    if records.endswith(MANIFEST):
        return records
    candidate = _join(records, MANIFEST)
    if tf.io.gfile.isdir(records) and tf.io.gfile.exists(candidate):
        return candidate
    return None


def _join(folder: str, name: str) -> str:
    return folder.rstrip("/") + "/" + name


def _glob_files(records: str | Sequence[str]) -> list[str]:
    patterns = [records] if isinstance(records, str) else list(records)
    if not patterns:
        raise TFRecordsError("records is an empty list; give a folder, a glob or record files.")
    files: list[str] = []
    for pattern in patterns:
        if tf.io.gfile.isdir(pattern):
            matched = [f for p in _RECORD_PATTERNS for f in tf.io.gfile.glob(_join(pattern, p))]
        else:
            matched = tf.io.gfile.glob(pattern)
        if not matched:
            raise FileNotFoundError(
                f"No record files match {pattern!r} (a folder needs {MANIFEST} or "
                f"files named {', '.join(_RECORD_PATTERNS)})."
            )
        files.extend(matched)
    return sorted(set(files))


def _from_manifest(
    manifest_path: str,
    records: str,
    keys: dict[str, Any],
    num_classes: int | None,
    task: str | None,
) -> RecordSource:
    manifest = _read_manifest(manifest_path)
    folder = manifest_path[: -len(MANIFEST)].rstrip("/")
    present = set(tf.io.gfile.listdir(folder))
    files, shard_folds = [], {}
    for shard in manifest["shards"]:
        if shard["file"] not in present:
            raise FileNotFoundError(
                f"Shard {shard['file']} listed in {manifest_path} is missing from {folder}; "
                "re-run `tfrecords-tools write` or copy the whole folder."
            )
        path = _join(folder, shard["file"])
        files.append(path)
        shard_folds[path] = int(shard["fold"])
    labeled = _manifest_labeled(manifest)
    if labeled:
        task, num_classes = manifest["task"], int(manifest["num_classes"])
    else:
        task, num_classes = task or "single_label", int(num_classes or 0)
    resolved = {**DEFAULT_KEYS, **keys}
    if "features" in manifest:
        for role in ("id", "fold", "label"):
            if DEFAULT_KEYS[role] not in manifest["features"]:
                resolved[role] = None
    return RecordSource(
        path=str(records),
        files=files,
        task=task,
        num_classes=num_classes,
        class_names=[str(c) for c in manifest["class_names"]],
        keys=resolved,
        label_dtype=tf.float32 if task == "regression" else tf.int64,
        shard_folds=shard_folds,
        manifest=manifest,
        labeled=labeled,
        # Manifests without it (older writers, format 1 too) have records without copies.
        stored_sizes=sorted(int(size) for size in manifest.get("stored_sizes", [])),
    )


def _read_manifest(path: str) -> dict[str, Any]:
    try:
        with tf.io.gfile.GFile(path, "r") as handle:
            manifest = json.loads(handle.read())
    except json.JSONDecodeError as error:
        raise TFRecordsError(f"Manifest {path} is not valid JSON: {error}") from error
    return check_manifest(manifest, path)
