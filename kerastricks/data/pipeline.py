"""`build_dataset`: TFRecords -> parse -> decode -> resize/crop -> augment -> batch -> prefetch.

Training: shuffled files, parallel interleave, element shuffle, repeat (when asked), decode with
the resize policy (`DEFAULT_RESIZE`, the YAML `data.resize` default), batch with
`drop_remainder`, then the augmentations on whole batches, so every shape is static (TPU).
Evaluation: file order then record order, no augmentation. Only graph ops (no
`tf.py_function`).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import tensorflow as tf

from kerastricks._sizes import size_pair
from kerastricks.config.names import DEFAULT_RESIZE
from kerastricks.data import decode
from kerastricks.data.augment import AugmentPipeline, resolve_augmentations
from kerastricks.data.parse import record_parser
from kerastricks.data.reader import MANIFEST, RecordSource, fold_predicate, resolve_records

AUTOTUNE = tf.data.AUTOTUNE
# Shuffle buffer of serialized records (a few hundred KB each at most) ...
_RECORD_SHUFFLE = 2048
# ... and of cached decoded uint8 images, capped by memory.
_CACHED_SHUFFLE_BYTES = 512 * 2**20
# With a cache and random-resized-crop, images are cached squashed to this multiple of the
# target side, so the crops keep some resolution to spare without caching full images.
CACHE_SCALE_FOR_CROP = 1.25
_INTERLEAVE_CYCLE = 16


def _check_args(
    batch_size: int,
    resize: str,
    cache: bool | str | None,
    with_ids: bool,
    with_weights: bool,
    training: bool,
    extra_records: Any,
) -> None:
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive int. Received: {batch_size!r}")
    decode.check_resize_policy(resize)
    if cache not in (None, False, True) and not isinstance(cache, str):
        raise ValueError(
            f"cache must be None, True, 'memory' or a file prefix. Received: {cache!r}"
        )
    if with_ids and with_weights:
        raise ValueError("with_ids and with_weights cannot both be set: pick one third element.")
    if with_ids and training:
        raise ValueError("with_ids=True is for evaluation (training=False): ids and MixUp clash.")
    if extra_records is not None and not training:
        raise ValueError("extra_records (pseudo-labels) join training only, never evaluation.")


def _record_stream(
    source: RecordSource,
    files: list[str],
    training: bool,
    seed: int | None,
    fold_filter: tuple[list[int] | None, list[int] | None] | None,
    fields: tuple[str, ...],
    parse: bool = True,
    copy_sizes: Sequence[int] | None = None,
) -> tf.data.Dataset:
    """Records: shuffled files read in parallel for training, in order otherwise.

    Parsed to dicts, or left serialized with `parse=False` (and no fold filter) so that the
    decode map parses them: one per-record map stage fewer. `copy_sizes`: the stored copies
    to parse (default: the source's own).
    """
    if training:
        dataset = tf.data.Dataset.from_tensor_slices(files)
        dataset = dataset.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
        dataset = dataset.interleave(
            tf.data.TFRecordDataset,
            cycle_length=min(len(files), _INTERLEAVE_CYCLE),
            num_parallel_calls=AUTOTUNE,
        )
    else:
        # Sequential read keeps file order then record order: predictions line up with ids.
        dataset = tf.data.TFRecordDataset(files, buffer_size=8 * 2**20)
    if not parse and fold_filter is None:
        return dataset
    # "fold" too, so that the filter has it and every parsed stream has the same structure
    # (sample_from_datasets merges this one with the pseudo-label stream).
    parser = record_parser(source, fields + ("fold",), copy_sizes)
    dataset = dataset.map(parser, num_parallel_calls=AUTOTUNE)
    if fold_filter is not None:
        folds, exclude = fold_filter
        dataset = dataset.filter(lambda r: fold_predicate(r["fold"], folds, exclude))
    return dataset


def _merge_extra(
    main: tf.data.Dataset,
    source: RecordSource,
    extra_records: Any,
    keys: Mapping[str, Any] | None,
    seed: int | None,
    main_count: int,
    fields: tuple[str, ...],
) -> tf.data.Dataset:
    """Mixes pseudo-labelled records into the training stream, in proportion to the counts.

    Both streams are parsed to the same structure first, so the extra records may use other
    keys; `sample_from_datasets` then draws from each in proportion to its size. The trainer
    counts an epoch's steps from the labelled training records only, so adding pseudo-labels
    keeps a round's number of steps (rounds compare at equal compute), and each epoch draws
    from both streams in that proportion.
    """
    ours = isinstance(extra_records, str) and tf.io.gfile.exists(
        os.path.join(extra_records, MANIFEST)
    )
    # Records with our manifest (pseudo-label sets) carry our feature names, whatever `keys`
    # says about the main records' foreign ones.
    extra = resolve_records(extra_records, None if ours else keys, num_classes=source.num_classes)
    if extra.num_classes != source.num_classes:
        raise ValueError(
            f"extra_records {extra.path} have num_classes={extra.num_classes}, the training "
            f"records {source.path} have {source.num_classes}."
        )
    # Parsed with the main records' copy sizes ("" where it has none): one structure for both.
    extra_stream = _record_stream(
        extra, extra.files, True, seed, None, fields, copy_sizes=source.stored_sizes
    )
    total = float(main_count + extra.num_records)
    return tf.data.Dataset.sample_from_datasets(
        [main, extra_stream],
        weights=[main_count / total, extra.num_records / total],
        seed=seed,
        stop_on_empty_dataset=False,
    )


def _with_seeds(dataset: tf.data.Dataset, seed: int | None, salt: int) -> tf.data.Dataset:
    """Pairs each element with a random int64 from a stream seeded by `seed + salt`.

    The consuming map turns it into a stateless seed with `_stateless_seed`: reproducible
    even under parallel maps. (A map of its own on the seed stream costs a function call per
    element for one `tf.stack`: ~70 us on one thread.) Streams with
    different salts give the crops and the batch augmentations independent seeds.
    """
    seeds = tf.data.Dataset.random(seed=None if seed is None else seed + salt)
    return tf.data.Dataset.zip((dataset, seeds))


def _stateless_seed(value: tf.Tensor) -> tf.Tensor:
    """The int64 `[2]` seed of `tf.random.stateless_*` ops from a `_with_seeds` value."""
    return tf.stack([value, tf.zeros_like(value)])


def _cache(dataset: tf.data.Dataset, cache: bool | str | None, key: str) -> tf.data.Dataset:
    if cache in (None, False):
        return dataset
    if cache is True or cache == "memory":
        return dataset.cache()
    # tf.data reuses any cache file with the same prefix; a digest of the files, folds, size
    # and policy keeps a later stage (other image size) or CV fold from reading stale images.
    digest = hashlib.sha1(key.encode()).hexdigest()[:12]
    return dataset.cache(f"{cache}-{digest}")


def _element(
    record: dict[str, tf.Tensor], image: tf.Tensor, fields: tuple[str, ...]
) -> dict[str, tf.Tensor]:
    return {"image": image, "label": record["label"], **{name: record[name] for name in fields}}


def _outputs(with_ids: bool, with_weights: bool):
    def select(batch: dict[str, tf.Tensor]) -> tuple[tf.Tensor, ...]:
        out = (batch["image"], batch["label"])
        if with_weights:
            return out + (batch["weight"],)
        if with_ids:
            return out + (batch["id"],)
        return out

    return select


def build_dataset(
    records: str | Sequence[str] | RecordSource,
    image_size: int | tuple[int, int],
    batch_size: int,
    training: bool,
    augment: Sequence[Mapping[str, Any] | str] | AugmentPipeline | None = None,
    seed: int | None = None,
    *,
    folds: Sequence[int] | None = None,
    exclude_folds: Sequence[int] | None = None,
    resize: str | None = None,
    cache: bool | str | None = None,
    repeat: bool = False,
    deterministic: bool | None = None,
    keys: Mapping[str, Any] | None = None,
    num_classes: int | None = None,
    drop_remainder: bool | None = None,
    with_ids: bool = False,
    with_weights: bool = False,
    extra_records: str | Sequence[str] | RecordSource | None = None,
) -> tf.data.Dataset:
    """Builds the input pipeline over TFRecords for training or evaluation.

    Yields `(images, labels)`: float32 `[B, H, W, 3]` in [0, 255] (tfimm models normalise
    their own inputs) and float32 `[B, C]` one-hot / multi-hot / soft / regression labels;
    plus float32 weights `[B]` with `with_weights=True`, or string ids `[B]` with
    `with_ids=True` (evaluation only).

    Training (`training=True`): seeded shuffle of files and records, batch with
    `drop_remainder=True` (fully static shapes), then the augmentations on the batch
    (per-sample ones draw per sample; MixUp/CutMix per batch). Evaluation: file order then
    record order, no augmentation, `drop_remainder=False`. Both resize with `DEFAULT_RESIZE`
    ("squash", as the YAML `data.resize`) unless told otherwise. One pass over the records
    is one epoch (`model.fit(ds, epochs=4)` works), and when the manifest counts the records
    the dataset knows its length (`ds.cardinality()`); `repeat=True` streams forever, for a
    trainer that counts `steps_per_epoch` itself (a TPU needs one uninterrupted stream).

    `deterministic=None` means deterministic when a `seed` is given (training) and always
    for evaluation, where predictions must line up with ids. `cache` (True/"memory", or a
    file prefix on fast disk) stores decoded, resized uint8 images before any random step;
    with random-resized-crop, images are cached squashed to `CACHE_SCALE_FOR_CROP` times the
    target size and the crop is taken from that. `extra_records` (pseudo-labelled records)
    join the training stream in proportion to their count (see `_merge_extra`).

    Args:
        records: folder with `manifest.json`, list of files, glob, or a RecordSource.
        image_size: int or (height, width).
        batch_size: batch size (global batch under a distribution strategy).
        training: training or evaluation pipeline.
        augment: YAML-style list `[{name, p, **kwargs}]` or an AugmentPipeline.
        seed: seed of shuffles, crops and augmentations.
        folds, exclude_folds: fold selection.
        resize: "squash", "center_crop" or "random_resized_crop" (default
            `DEFAULT_RESIZE`).
        cache: None/False, True/"memory", or a file path prefix.
        repeat: repeat forever (default: one pass, of known length when the manifest
            counts the records).
        deterministic: element order reproducible (see above).
        keys, num_classes: schema of foreign records (see `resolve_records`); for records
            without labels `num_classes` is the model's, and the labels are zeros of that size.
        drop_remainder: default True for training, False for evaluation.
        with_ids, with_weights: add ids or sample weights as a third element.
        extra_records: records mixed into training (pseudo-labels).
    """
    size = size_pair(image_size)
    resize = resize or DEFAULT_RESIZE
    _check_args(batch_size, resize, cache, with_ids, with_weights, training, extra_records)
    pipeline = resolve_augmentations(augment if training else None, seed)
    source = resolve_records(records, keys, num_classes=num_classes)
    if training and not source.labeled:
        raise ValueError(
            f"Records {source.path} have no labels (written without --label-col): they can be "
            "predicted or pseudo-labelled, not trained on."
        )
    files = source.files_for(folds, exclude_folds)
    if not files:
        raise ValueError(
            f"No record files in {source.path} for folds={folds}, exclude={exclude_folds}."
        )
    needs_filter = source.needs_record_filter(folds, exclude_folds)
    fold_filter = source.check_folds(folds, exclude_folds) if needs_filter else None
    if deterministic is None:
        deterministic = seed is not None or not training

    # Records stay serialized until the decode map (parse and decode in one stage: ~8% more
    # images/s than two per-record maps, benchmarks/pipeline.py) unless they must be parsed:
    # to filter folds, or to merge pseudo-labelled records that use other keys.
    late = fold_filter is None and extra_records is None
    # Only what the outputs need is parsed and batched (ids are strings: costly to batch).
    fields = ("weight",) if with_weights else ("id",) if with_ids else ()
    dataset = _record_stream(source, files, training, seed, fold_filter, fields, not late)
    if extra_records is not None:
        count = source.count(folds, exclude_folds)
        dataset = _merge_extra(dataset, source, extra_records, keys, seed, count, fields)
    cache_key = f"{files}|{folds}|{exclude_folds}|{extra_records}|{source.stored_sizes}"
    parser = record_parser(source, fields) if late else None
    dataset = _decode_stage(
        dataset, size, resize, cache, training, repeat, seed, cache_key, parser, fields
    )
    # Sequential batching: a parallel batch's bookkeeping cost more CPU than copying elements
    # into their batch (2-4 % of images/s on two cores; benchmarks/README.md, "Lab notes").
    drop_remainder = training if drop_remainder is None else drop_remainder
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    if not repeat and extra_records is None and source.manifest is not None:
        count = source.count(folds, exclude_folds)
        dataset = _with_known_length(dataset, count, batch_size, drop_remainder)
    if pipeline:
        dataset = _with_seeds(dataset, seed, salt=2)
        dataset = dataset.map(
            lambda batch, s: _augment_batch(batch, _stateless_seed(s), pipeline),
            num_parallel_calls=None if deterministic else AUTOTUNE,
        )
    dataset = dataset.map(_outputs(with_ids, with_weights)).prefetch(AUTOTUNE)
    options = tf.data.Options()
    options.deterministic = deterministic
    return dataset.with_options(options)


def _with_known_length(
    dataset: tf.data.Dataset, count: int, batch_size: int, drop_remainder: bool
) -> tf.data.Dataset:
    """The batch count of one pass from the manifest's record count, so that Keras (and
    `fit_stages`) know an epoch's steps before reading it."""
    if int(dataset.cardinality()) >= 0:
        return dataset
    batches = count // batch_size if drop_remainder else -(-count // batch_size)
    return dataset.apply(tf.data.experimental.assert_cardinality(batches))


def _augment_batch(
    batch: dict[str, tf.Tensor], seed: tf.Tensor, pipeline: AugmentPipeline
) -> dict[str, tf.Tensor]:
    images, labels = pipeline(batch["image"], batch["label"], seed)
    return {**batch, "image": images, "label": labels}


def _decode_stage(
    dataset: tf.data.Dataset,
    size: tuple[int, int],
    resize: str,
    cache: bool | str | None,
    training: bool,
    repeat: bool,
    seed: int | None,
    cache_key: str,
    parser: Callable[[tf.Tensor], dict[str, tf.Tensor]] | None,
    fields: tuple[str, ...],
) -> tf.data.Dataset:
    """Decode + resize, with the cache before anything random, then shuffle and repeat.

    With a `parser`, the elements are serialized records and each decode map parses first.
    """
    random_crop = resize == "random_resized_crop"

    def parsed(record: Any) -> dict[str, tf.Tensor]:
        return record if parser is None else parser(record)

    cached = cache not in (None, False)
    buffer = _RECORD_SHUFFLE
    if cached:
        cache_size = size
        if random_crop:
            cache_size = tuple(int(round(CACHE_SCALE_FOR_CROP * s)) for s in size)
        fixed = "squash" if random_crop else resize

        # Cached as uint8: a quarter of float32's memory, exact for the decoded pixels.
        def decode_for_cache(record: Any) -> dict[str, tf.Tensor]:
            record = parsed(record)
            image = decode.decode_and_resize(
                record["image"], cache_size, fixed, copies=record.get("copies")
            )
            return _element(record, _to_uint8(image), fields)

        dataset = dataset.map(decode_for_cache, num_parallel_calls=AUTOTUNE)
        dataset = _cache(dataset, cache, f"{cache_key}|{cache_size}|{fixed}")
        buffer = max(64, min(buffer, _CACHED_SHUFFLE_BYTES // (cache_size[0] * cache_size[1] * 3)))
    if training:
        dataset = dataset.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        dataset = dataset.repeat()
    if cached and not random_crop:
        return dataset.map(lambda r: {**r, "image": tf.cast(r["image"], tf.float32)})
    if not random_crop:

        def decode_fixed(record: Any) -> dict[str, tf.Tensor]:
            record = parsed(record)
            image = decode.decode_and_resize(
                record["image"], size, resize, copies=record.get("copies")
            )
            return _element(record, image, fields)

        return dataset.map(decode_fixed, num_parallel_calls=AUTOTUNE)

    def crop(record: Any, seed_value: tf.Tensor) -> dict[str, tf.Tensor]:
        element_seed = _stateless_seed(seed_value)
        if cached:
            image = decode.crop_and_resize(record["image"], size, resize, element_seed)
        else:
            record = parsed(record)
            image = decode.decode_and_resize(
                record["image"], size, resize, element_seed, record.get("copies")
            )
        return _element(record, image, fields)

    return _with_seeds(dataset, seed, salt=1).map(crop, num_parallel_calls=AUTOTUNE)


def stored_sizes_used(
    records: str | Sequence[str] | RecordSource,
    image_size: int | tuple[int, int],
    resize: str = "random_resized_crop",
    *,
    cache: bool | str | None = None,
    keys: Mapping[str, Any] | None = None,
) -> list[str]:
    """Which stored images a pipeline at `image_size` decodes from: copy sizes and "full".

    For a stage table or a history row: `["128", "256", "full"]` means that some samples are
    decoded from the 128 px copy (`image_128`), some from the 256 px one and some from the
    image itself. Follows `decode.choose_copy`'s rule from the manifest alone (no record is
    read): squash and center-crop read the smallest copy whose shorter side covers the
    output's longer side; random-resized-crop reads that copy for large crops and larger
    ones (then the image) for crops too small in it, down to the smallest crop side
    (`RRC_SCALE[0]` of the area at the extreme aspect of `RRC_RATIO`). Records whose image
    was not larger than a copy size have no such copy: they are read "full". With a `cache`,
    random-resized-crop decodes squashed to `CACHE_SCALE_FOR_CROP` times the size.

    Example:

    ```python
    stored_sizes_used("data/photos", 64)  # ["128", "256"]
    ```
    """
    source = resolve_records(records, keys)
    decode.check_resize_policy(resize)
    need = max(size_pair(image_size))
    if resize == "random_resized_crop" and cache not in (None, False):
        need, resize = round(CACHE_SCALE_FOR_CROP * need), "squash"
    covering = [size for size in source.stored_sizes if size >= need]
    if not covering:
        return ["full"]
    used = covering[:1]
    smallest_crop = 1.0
    if resize == "random_resized_crop":
        smallest_crop = (decode.RRC_SCALE[0] * min(decode.RRC_RATIO)) ** 0.5
        used = [
            s for i, s in enumerate(covering) if i == 0 or smallest_crop * covering[i - 1] < need
        ]
    held = (source.manifest or {}).get("counts", {}).get("copies", {})
    all_hold = int(held.get(str(covering[0]), 0)) >= source.num_records
    if not all_hold or smallest_crop * used[-1] < need:
        used.append("full")
    return [str(size) for size in used]


def _to_uint8(image: tf.Tensor) -> tf.Tensor:
    return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)
