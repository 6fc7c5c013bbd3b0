"""The record format shared with `kerastricks.data`: feature keys, version, Example building."""

from __future__ import annotations

import functools
import struct
from collections.abc import Sequence

FORMAT_VERSION = 1
TASKS = ("single_label", "multi_label", "regression")
MANIFEST_NAME = "manifest.json"
FOLDS_CSV_NAME = "folds.csv"
SHARD_SUFFIX = ".tfrec"


class TFRecordsError(ValueError):
    """A problem with the input or the output folder that the user must fix (bad CSV, too many
    bad images, an existing dataset in the output folder)."""


def copy_key(size: int) -> str:
    """The feature holding the re-encoded copy whose shorter side is `size` (`image_128`)."""
    return f"image_{size}"


def feature_types(task: str | None, sizes: Sequence[int] = ()) -> dict[str, str]:
    """Returns the feature keys and their types for a task (None: unlabelled, no `label`) and
    the stored copy sizes, as written into the manifest."""
    copies = {copy_key(size): "bytes" for size in sizes}
    if task is None:
        return {"image": "bytes", **copies, "id": "bytes", "fold": "int64"}
    label_type = "float_list" if task == "regression" else "int64_list"
    return {"image": "bytes", **copies, "label": label_type, "id": "bytes", "fold": "int64"}


def shard_name(prefix: str, fold: int, index: int) -> str:
    """Returns the file name of shard `index` of `fold` (`-1` when no folds were assigned)."""
    return f"{prefix}-f{fold}-{index:05d}{SHARD_SUFFIX}"


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


# Lengths and ids below 2**14 (1-2 bytes) come from a table: a record needs about 20 varints.
_SMALL_VARINTS = [_encode_varint(value) for value in range(1 << 14)]


def _varint(value: int) -> bytes:
    """Protocol-buffer base-128 varint; negative int64 values as their 64-bit two's complement."""
    if 0 <= value < 1 << 14:
        return _SMALL_VARINTS[value]
    if 0 < value < 1 << 21:  # image sizes of 16 kB to 2 MB
        return bytes(((value & 0x7F) | 0x80, ((value >> 7) & 0x7F) | 0x80, value >> 14))
    return _encode_varint(value & 0xFFFFFFFFFFFFFFFF)


def _varint_size(value: int) -> int:
    """The length of `_varint(value)` for a non-negative value."""
    return max(1, (value.bit_length() + 6) // 7)


def _field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: its tag byte (field number << 3 | 2), length, payload."""
    return tag + _varint(len(payload)) + payload


# Tags of the length-delimited fields used (field number << 3 | wire type 2).
_F1, _F2, _F3 = b"\x0a", b"\x12", b"\x1a"
_KEYS = {key: _field(_F1, key.encode()) for key in ("id", "label", "fold", "image")}


def _map_entry(key: str, feature: bytes) -> bytes:
    """One `Features.feature` map entry (field 1): key (field 1) and `Feature` (field 2)."""
    key_field = _KEYS.get(key) or _field(_F1, key.encode())
    return _field(_F1, key_field + _field(_F2, feature))


# `Feature` oneof field numbers: bytes_list 1, float_list 2, int64_list 3; each list holds its
# values in field 1 (numeric lists packed).
def _int64_feature(values: Sequence[int]) -> bytes:
    return _field(_F3, _field(_F1, b"".join(_varint(int(v)) for v in values)) if values else b"")


def _bytes_feature(value: bytes) -> bytes:
    return _field(_F1, _field(_F1, value))


def _float_feature(values: Sequence[float]) -> bytes:
    packed = struct.pack(f"<{len(values)}f", *values)
    return _field(_F2, _field(_F1, packed) if values else b"")


def example_prefix(
    image_size: int,
    label: Sequence[int] | Sequence[float],
    sample_id: str,
    fold: int,
    task: str | None,
    copies: Sequence[tuple[int, bytes]] = (),
) -> bytes:
    """Returns the serialized `tf.train.Example` of our record format up to the image bytes.

    `task=None` writes an unlabelled record: no `label` feature at all (a test set). `copies`
    are `(size, JPEG bytes)` pairs stored as `image_<size>` features (smaller re-encodes of
    the image, for a resolution curriculum); they are small, so they are copied in here.

    `example_prefix(len(image), ...) + image` is the whole record: the image feature comes
    last, so the writer never copies the image into a message. Written by hand because
    protobuf's Python API copies the image into the message and again into the output
    (two thirds of the writer's time per photo, benchmarks/README.md).
    Parsers accept map entries in any order; the tests parse it back with protobuf.
    """
    label_entry = b"" if task is None else _label_entry(task, tuple(label))
    head = _id_entry(sample_id) + label_entry + _fold_entry(fold)
    if copies:
        head += b"".join(_map_entry(copy_key(size), _bytes_feature(data)) for size, data in copies)
    if 0x4000 <= image_size < 0x1FFF00:
        # Photos of 16 kB to 2 MB: every length below is a 3-byte varint, the whole entry's
        # header a fixed pattern (a third of the time of the general case, measured).
        bytes_list = image_size + 4
        feature = image_size + 8
        entry = image_size + 19  # key (7 bytes) + value tag and length (4) + feature (8 + n)
        features = len(head) + entry + 4
        return b"".join(
            (
                _F1,
                _varint(features),
                head,
                _F1 + _varint3(entry) + _KEYS["image"] + _F2 + _varint3(feature),
                _F1 + _varint3(bytes_list) + _F1 + _varint3(image_size),
            )
        )
    # The image entry, nested: BytesList value (1) < Feature.bytes_list (1) < map value (2).
    bytes_list = 1 + _varint_size(image_size) + image_size
    feature = 1 + _varint_size(bytes_list) + bytes_list
    entry = _IMAGE_KEY_SIZE + 1 + _varint_size(feature) + feature
    features = len(head) + 1 + _varint_size(entry) + entry
    return b"".join(
        (
            _F1,  # Example.features
            _varint(features),
            head,
            _F1,  # Features.feature map entry
            _varint(entry),
            _KEYS["image"],
            _F2,  # the entry's value: Feature
            _varint(feature),
            _F1,  # Feature.bytes_list
            _varint(bytes_list),
            _F1,  # BytesList.value
            _varint(image_size),
        )
    )


def _varint3(value: int) -> bytes:
    """The 3-byte varint of a value in [2**14, 2**21)."""
    return bytes(((value & 0x7F) | 0x80, ((value >> 7) & 0x7F) | 0x80, value >> 14))


_IMAGE_KEY_SIZE = len(_KEYS["image"])


def _id_entry(sample_id: str) -> bytes:
    encoded = sample_id.encode("utf-8")
    size = len(encoded)
    if size < 118:  # every length a 1-byte varint: entry, key "id", Feature, BytesList, value
        return (
            bytes((10, size + 10, 10, 2, 105, 100, 18, size + 4, 10, size + 2, 10, size)) + encoded
        )
    return _map_entry("id", _field(_F1, _field(_F1, encoded)))


@functools.lru_cache(maxsize=4096)
def _label_entry(task: str, label: tuple) -> bytes:
    if task == "regression":
        return _map_entry("label", _float_feature([float(v) for v in label]))
    return _map_entry("label", _int64_feature(label))


@functools.lru_cache(maxsize=256)
def _fold_entry(fold: int) -> bytes:
    return _map_entry("fold", _int64_feature([fold]))


def make_example(
    image: bytes,
    label: Sequence[int] | Sequence[float],
    sample_id: str,
    fold: int,
    task: str | None,
    copies: Sequence[tuple[int, bytes]] = (),
) -> bytes:
    """Returns one serialized `tf.train.Example` in our record format (`task=None`: no label)."""
    return example_prefix(len(image), label, sample_id, fold, task, copies) + image


# The manifest contract, shared by the writers (`tfrecords_tools.manifest`, pseudo-label sets)
# and the reader (`kerastricks.data.reader`).
MANIFEST_REQUIRED = ("format_version", "task", "num_classes", "class_names", "shards")
PSEUDO_PREFIX = "pseudo"  # pseudo-label sets: one shard, fold -1 (trains, never validates)
PSEUDO_FEATURES = {"soft_label": "float_list", "weight": "float"}


def manifest_labeled(manifest: dict) -> bool:
    """False for records written without labels (`labeled: false`, or no label feature)."""
    if "features" in manifest and "label" not in manifest["features"]:
        return False
    return bool(manifest.get("labeled", True))


def check_manifest(manifest: object, path: str) -> dict:
    """Returns a parsed manifest, or raises a TFRecordsError naming what is missing or wrong."""
    if not isinstance(manifest, dict):
        raise TFRecordsError(f"Manifest {path} is invalid: missing {list(MANIFEST_REQUIRED)}.")
    missing = [key for key in MANIFEST_REQUIRED if key not in manifest]
    if missing:
        raise TFRecordsError(f"Manifest {path} is invalid: missing {missing}.")
    if manifest["format_version"] != FORMAT_VERSION:
        raise TFRecordsError(
            f"Manifest {path} has format_version={manifest['format_version']!r}; this version "
            f"of kerastricks reads format_version={FORMAT_VERSION}. Rewrite the records."
        )
    if manifest["task"] not in TASKS and manifest_labeled(manifest):
        raise TFRecordsError(
            f"Manifest {path}: task must be one of {TASKS}, got {manifest['task']!r}."
        )
    for shard in manifest["shards"]:
        if not isinstance(shard, dict) or "file" not in shard or "fold" not in shard:
            raise TFRecordsError(
                f"Manifest {path}: each shard needs 'file' and 'fold', got {shard!r}."
            )
    return manifest


def shards_manifest(
    task: str | None,
    class_names: Sequence[str],
    num_classes: int,
    shards: list[dict],
    extra_features: dict[str, str] | None = None,
    **fields: object,
) -> dict:
    """The manifest fields every record folder has, from its shard entries (`file`, `fold`,
    `count`, `bytes`); `fields` adds or overrides keys (`skipped`, `provenance`, ...)."""
    per_fold: dict[str, int] = {}
    for shard in shards:
        per_fold[str(shard["fold"])] = per_fold.get(str(shard["fold"]), 0) + int(shard["count"])
    folds = {int(fold) for fold in per_fold} - {-1}
    manifest = {
        "format_version": FORMAT_VERSION,
        "task": task,
        "labeled": task is not None,
        "features": {**feature_types(task), **(extra_features or {})},
        "class_names": list(class_names),
        "num_classes": int(num_classes),
        "num_records": sum(int(shard["count"]) for shard in shards),
        "num_folds": len(folds),
        "shards": list(shards),
        "counts": {"per_fold": per_fold},
    }
    manifest.update(fields)
    return manifest
