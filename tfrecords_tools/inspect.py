"""`inspect_records` and `verify_records`: what TFRecords hold, and whether they are whole."""

from __future__ import annotations

import os
import re
import sys
from collections import defaultdict

import tensorflow as tf

from tfrecords_tools.manifest import read_manifest
from tfrecords_tools.schema import FOLDS_CSV_NAME, MANIFEST_NAME, SHARD_SUFFIX, TFRecordsError

_RECORD_SUFFIXES = (".tfrec", ".tfrecord", ".tfrecords", ".tfr")
_IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"BM", b"RIFF")
_KINDS = {"bytes_list": "bytes", "int64_list": "int64", "float_list": "float"}
# What `tfrecords-tools write` leaves in a folder: shards `<prefix>-f<fold>-<index>.tfrec`,
# their partial `.<shard>.tmp-<pid>` files, and folds.csv (written just before the manifest).
# Re-encoded copies next to the image (`write --sizes`): `image_<shorter side>`.
_COPY_KEY = re.compile(r"image_(\d+)$")
_OUR_SHARD = re.compile(r".+-f-?\d+-\d{5}" + re.escape(SHARD_SUFFIX) + r"(\.tmp-\d+)?$")


def interrupted_write(folder: str) -> str | None:
    """Returns why a folder without `manifest.json` looks like an interrupted write, or None
    (foreign records, e.g. a Kaggle layout, have no manifest either)."""
    if not tf.io.gfile.isdir(folder) or tf.io.gfile.exists(os.path.join(folder, MANIFEST_NAME)):
        return None
    names = tf.io.gfile.listdir(folder)
    ours = sorted(n for n in names if _OUR_SHARD.match(n.lstrip(".")) or n == FOLDS_CSV_NAME)
    if not ours:
        return None
    return (
        f"{folder} has no {MANIFEST_NAME} but holds files of a tfrecords-tools write "
        f"({', '.join(ours[:3])}{', ...' if len(ours) > 3 else ''}): the write was interrupted "
        "and the folder is incomplete; write it again with `tfrecords-tools write ... --overwrite`"
    )


def resolve_files(path: str) -> tuple[list[str], dict | None]:
    """Returns the record files of a folder (its manifest's shards, else every record file in it),
    a single file, or a glob; and the folder's manifest when there is one."""
    if tf.io.gfile.isdir(path):
        if tf.io.gfile.exists(os.path.join(path, MANIFEST_NAME)):
            manifest = read_manifest(path)
            return [os.path.join(path, shard["file"]) for shard in manifest["shards"]], manifest
        names = sorted(tf.io.gfile.listdir(path))
        files = [os.path.join(path, n) for n in names if n.lower().endswith(_RECORD_SUFFIXES)]
    elif tf.io.gfile.exists(path):
        files = [path]
    else:
        files = sorted(tf.io.gfile.glob(path))
    if not files:
        raise TFRecordsError(
            f"no TFRecord files at {path}: give a folder, a file or a glob such as "
            f"'data/*.tfrec' (folders are searched for {', '.join(_RECORD_SUFFIXES)})"
        )
    return files, None


def _error_text(error: tf.errors.OpError) -> str:
    """The op error's message without the function-node prefix and op suffix TF adds."""
    text = re.sub(r"\{\{.*?\}\}\s*", "", error.message)
    return re.sub(r"\s*\[Op:.*$", "", text).strip()


def _looks_like_image(value: bytes) -> bool:
    return value.startswith(_IMAGE_MAGIC)


def find_image_key(example: tf.train.Example) -> str | None:
    """Returns the feature holding the encoded image: `image` if present, else the first bytes
    feature whose value starts like a JPEG, PNG, GIF, BMP or WebP file."""
    feature = example.features.feature
    candidates = sorted(feature, key=lambda key: key != "image")
    for key in candidates:
        values = feature[key].bytes_list.value
        if values and _looks_like_image(values[0]):
            return key
    return None


def _feature_summary(examples: list[tf.train.Example]) -> dict:
    """Per key: its type and the range of value counts seen (a fixed [n] or a variable range)."""
    kinds, lengths = {}, defaultdict(list)
    for example in examples:
        for key, feature in example.features.feature.items():
            kind = feature.WhichOneof("kind")
            if kinds.get(key, "empty") == "empty":
                kinds[key] = _KINDS.get(kind, "empty")
            lengths[key].append(len(getattr(feature, kind).value) if kind else 0)
    summary = {}
    for key in sorted(kinds):
        low, high = min(lengths[key]), max(lengths[key])
        shape = f"[{low}]" if low == high else f"[{low}..{high}]"
        present = len(lengths[key])
        summary[key] = {"type": kinds[key], "shape": shape, "present_in": present}
    return summary


def _count_records(file: str) -> tuple[int | None, str | None]:
    """Counts a file's records in a graph loop (CRCs checked); None and a reason if corrupt."""
    try:
        dataset = tf.data.TFRecordDataset(file)
        return int(dataset.reduce(tf.constant(0, tf.int64), lambda n, _: n + 1)), None
    except (tf.errors.DataLossError, tf.errors.NotFoundError) as error:
        return None, _error_text(error)


def _first_examples(files: list[str], num_records: int) -> list[tf.train.Example]:
    examples = []
    try:
        for record in tf.data.TFRecordDataset(files).take(num_records):
            examples.append(tf.train.Example.FromString(record.numpy()))
    except tf.errors.DataLossError:
        pass  # the per-file counts name the corrupt file
    return examples


def _decoded_shape(examples: list[tf.train.Example], image_key: str | None) -> list[int] | None:
    if image_key is None or not examples:
        return None
    data = examples[0].features.feature[image_key].bytes_list.value[0]
    try:
        return tf.io.decode_image(data, expand_animations=False).shape.as_list()
    except tf.errors.InvalidArgumentError:
        return None


def inspect_records(path: str, num_records: int = 16) -> dict:
    """Describes TFRecords of any origin: feature keys, types and value shapes (from the first
    `num_records` records), record counts per file, and one decoded image's shape.

    Example:

    ```python
    inspect_records("data/digits")["features"]["label"]  # {"type": "int64", "shape": "[1]", ...}
    ```

    Args:
        path: a folder (its manifest's shards, or every record file in it), a file or a glob.
        num_records: how many records to parse for the feature summary.

    Returns:
        A dict with `files` (file, records, error), `num_records`, `features`, `image_key`,
        `image_shape` ([height, width, channels]) and `manifest` (or None).
    """
    files, manifest = resolve_files(path)
    counts = []
    for file in files:
        count, error = _count_records(file)
        counts.append({"file": file, "records": count, "error": error})
    examples = _first_examples(files, num_records)
    image_key = find_image_key(examples[0]) if examples else None
    return {
        "path": path,
        "files": counts,
        "num_records": sum(item["records"] or 0 for item in counts),
        "features": _feature_summary(examples),
        "image_key": image_key,
        "image_shape": _decoded_shape(examples, image_key),
        "manifest": manifest,
    }


@tf.function(reduce_retracing=True)
def _decode_shape(data: tf.Tensor) -> tf.Tensor:
    return tf.shape(tf.io.decode_image(data, expand_animations=False))


def _verify_file(file: str, image_key: str | None) -> dict:
    """Reads every record of one file, parses it and decodes its image; lists what fails."""
    errors, count = [], 0
    try:
        for index, record in enumerate(tf.data.TFRecordDataset(file)):
            count = index + 1
            try:
                example = tf.train.Example.FromString(record.numpy())
            except Exception as error:  # protobuf raises its own DecodeError type.
                errors.append(f"record {index}: not a tf.train.Example ({error})")
                continue
            key = image_key or find_image_key(example)
            values = example.features.feature[key].bytes_list.value if key else []
            if not values:
                errors.append(f"record {index}: no image feature {key or '(none found)'!r}")
                continue
            try:
                _decode_shape(tf.constant(values[0]))
            except tf.errors.InvalidArgumentError as error:
                errors.append(f"record {index}: image does not decode ({_error_text(error)})")
            errors += [f"record {index}: {problem}" for problem in _copy_problems(example)]
    except (tf.errors.DataLossError, tf.errors.NotFoundError) as error:
        errors.append(f"record {count}: unreadable, reading stopped ({_error_text(error)})")
    return {"file": file, "records": count, "errors": errors}


def _copy_problems(example: tf.train.Example) -> list[str]:
    """Decodes every `image_<size>` copy of a record; each must decode to that shorter side."""
    problems = []
    for key, feature in sorted(example.features.feature.items()):
        match = _COPY_KEY.match(key)
        if not match or not feature.bytes_list.value:
            continue
        try:
            height, width = _decode_shape(tf.constant(feature.bytes_list.value[0])).numpy()[:2]
        except tf.errors.InvalidArgumentError as error:
            problems.append(f"copy {key} does not decode ({_error_text(error)})")
            continue
        if min(height, width) != int(match.group(1)):
            problems.append(f"copy {key} is {height}x{width}, its shorter side is not {match[1]}")
    return problems


def _show_progress(done: int, total: int, records: int, file: str) -> None:
    end = "\n" if done == total else ""
    text = f"\rverify: {done}/{total} files, {records} records ({os.path.basename(file)})"
    print(f"{text:<79}", end=end, file=sys.stderr, flush=True)


def verify_records(path: str, image_key: str | None = None, progress: bool = False) -> dict:
    """Reads every record (checking CRCs), decodes every image, and names each corrupt one.

    A folder without `manifest.json` that holds our shards or `folds.csv` is an interrupted
    write: reported as a problem, however whole its records are.

    Example:

    ```python
    report = verify_records("data/digits")
    report["ok"], report["problems"]  # (False, ["train-f0-00000.tfrec: record 12: ..."])
    ```

    Args:
        path: a folder, a file or a glob, as in `inspect_records`.
        image_key: feature holding the encoded image; found from the data when None.
        progress: print a line per file read (files, records so far) to stderr.

    Returns:
        A dict with `files` (file, records, errors), `num_records`, `problems` (one line per
        corrupt record, count that disagrees with the manifest, or a missing manifest) and `ok`.
    """
    files, manifest = resolve_files(path)
    interrupted = interrupted_write(path)
    reports = []
    for file in files:
        reports.append(_verify_file(file, image_key))
        if progress:
            records = sum(r["records"] for r in reports)
            _show_progress(len(reports), len(files), records, file)
    problems = [interrupted] if interrupted else []
    problems += [f"{r['file']}: {error}" for r in reports for error in r["errors"]]
    if manifest is not None:
        for shard, report in zip(manifest["shards"], reports, strict=True):
            if report["records"] != shard["count"] and not report["errors"]:
                problems.append(
                    f"{report['file']}: {report['records']} records, "
                    f"the manifest says {shard['count']}"
                )
    return {
        "path": path,
        "files": reports,
        "num_records": sum(r["records"] for r in reports),
        "problems": problems,
        "ok": not problems,
    }


def format_inspection(report: dict) -> str:
    """Returns `inspect_records`' report as readable text."""
    lines = [f"{report['path']}: {report['num_records']} records in {len(report['files'])} files"]
    for item in report["files"]:
        count = item["records"] if item["error"] is None else f"CORRUPT ({item['error']})"
        lines.append(f"  {os.path.basename(item['file'])}: {count}")
    lines.append("features:")
    for key, feature in report["features"].items():
        lines.append(f"  {key}: {feature['type']} {feature['shape']}")
    lines.append(f"image key: {report['image_key']}, decoded shape: {report['image_shape']}")
    if report["manifest"] is not None:
        manifest = report["manifest"]
        lines.append(
            f"manifest: task {manifest['task']}, {manifest['num_classes']} classes, "
            f"{manifest['num_folds']} folds, {len(manifest['skipped'])} skipped at write time"
        )
        if manifest.get("stored_sizes"):
            copies = manifest["counts"].get("copies", {})
            held = ", ".join(
                f"{size} px ({copies.get(str(size), '?')} records)"
                for size in manifest["stored_sizes"]
            )
            lines.append(f"stored copies (shorter side): {held}")
    return "\n".join(lines)


def format_verification(report: dict) -> str:
    """Returns `verify_records`' report as readable text."""
    if report["ok"]:
        return f"OK: {report['num_records']} records in {len(report['files'])} files"
    lines = [f"CORRUPT: {len(report['problems'])} problems in {report['path']}"]
    return "\n".join(lines + [f"  {problem}" for problem in report["problems"]])
