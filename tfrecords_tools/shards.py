"""Shards: planning by size, one worker writing one whole shard atomically, the worker pool."""

from __future__ import annotations

import math
import multiprocessing
import os
import sys
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field

import numpy as np
import tensorflow as tf

from tfrecords_tools import images
from tfrecords_tools.recordfile import RecordFile
from tfrecords_tools.schema import TFRecordsError, example_prefix, shard_name
from tfrecords_tools.sources import SourceTable

_SIZE_SAMPLE = 64
_RESIZE_SAMPLE = 8
# Bytes a record adds to its image: id, label, fold, feature keys and the 16-byte framing.
_RECORD_OVERHEAD = 64


@dataclass
class ShardJob:
    """One shard for one worker: whole shards keep every file single-writer and atomic."""

    out: str
    file: str
    fold: int
    task: str | None
    rows: list[int]
    paths: list[str]
    shown_paths: list[str]
    ids: list[str]
    labels: list[list]
    resize: int | None
    quality: int
    sizes: tuple[int, ...] = ()


@dataclass
class ShardResult:
    """What a worker wrote: the rows that made it into the shard and the files it skipped."""

    file: str
    fold: int
    count: int
    bytes: int
    rows: list[int] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    heights: list[int] = field(default_factory=list)
    widths: list[int] = field(default_factory=list)
    formats: list[str] = field(default_factory=list)
    copies: dict[int, int] = field(default_factory=dict)  # records holding each copy size


def _stored_image(data: bytes, resize: int | None, quality: int) -> images.StoredImage:
    if resize is None:
        return images.check_image(data)
    return images.resize_image(data, resize, quality)


def write_shard(job: ShardJob) -> ShardResult:
    """Writes one shard under a temporary name and renames it when complete (worker entry)."""
    final = os.path.join(job.out, job.file)
    temporary = os.path.join(job.out, f".{job.file}.tmp-{os.getpid()}")
    result = ShardResult(file=job.file, fold=job.fold, count=0, bytes=0)
    try:
        with RecordFile(temporary) as writer:
            for i, path in enumerate(job.paths):
                try:
                    data = images.read_bytes(path)
                    stored = _stored_image(data, job.resize, job.quality)
                    copies = images.make_copies(data, stored, job.sizes, job.quality)
                except images.BadImageError as error:
                    result.skipped.append({"path": job.shown_paths[i], "reason": str(error)})
                    continue
                head = example_prefix(
                    len(stored.data), job.labels[i], job.ids[i], job.fold, job.task, copies
                )
                writer.write(head, stored.data)
                for size, _ in copies:
                    result.copies[size] = result.copies.get(size, 0) + 1
                result.rows.append(job.rows[i])
                result.heights.append(stored.height)
                result.widths.append(stored.width)
                result.formats.append(stored.format)
        result.count = len(result.rows)
        if result.count == 0:
            tf.io.gfile.remove(temporary)
            return result
        tf.io.gfile.rename(temporary, final, overwrite=True)
    except BaseException:
        if tf.io.gfile.exists(temporary):
            tf.io.gfile.remove(temporary)
        raise
    result.bytes = tf.io.gfile.stat(final).length
    return result


def estimate_record_bytes(
    table: SourceTable, resize: int | None, quality: int, seed: int, sizes: Sequence[int] = ()
) -> float:
    """Mean stored bytes per record, from a sample (a stat per file, or a re-encode when
    resizing or making copies)."""
    rng = np.random.default_rng(seed)
    encode = resize is not None or bool(sizes)
    count = _RESIZE_SAMPLE if encode else _SIZE_SAMPLE
    sample = rng.permutation(len(table.paths))[:count]
    lengths = []
    for row in sample:
        try:
            if not encode:
                lengths.append(tf.io.gfile.stat(table.paths[row]).length)
            else:
                data = images.read_bytes(table.paths[row])
                stored = _stored_image(data, resize, quality)
                copies = images.make_copies(data, stored, sizes, quality)
                lengths.append(len(stored.data) + sum(len(copy) for _, copy in copies))
        except (tf.errors.NotFoundError, images.BadImageError):
            continue
    return float(np.mean(lengths)) + _RECORD_OVERHEAD if lengths else 0.0


def plan_shards(
    folds: np.ndarray, record_bytes: float, shard_mb: float, workers: int, seed: int
) -> list[tuple[int, int, np.ndarray]]:
    """Splits each fold's rows (shuffled, so shards mix classes) into shards of about `shard_mb`.

    With several workers every fold gets at least its share of `workers` shards, so that all
    workers have a shard to write even when the data is smaller than `workers * shard_mb`.
    Returns `(fold, index, rows)` per shard.
    """
    rng = np.random.default_rng(seed)
    plan = []
    for fold in np.unique(folds):
        rows = rng.permutation(np.flatnonzero(folds == fold))
        count = math.ceil(len(rows) * record_bytes / (shard_mb * 1e6))
        if workers > 1:
            count = max(count, math.ceil(workers * len(rows) / len(folds)))
        count = min(max(count, 1), len(rows))
        for index, part in enumerate(np.array_split(rows, count)):
            plan.append((int(fold), index, part))
    return plan


def make_jobs(
    table: SourceTable,
    plan: list[tuple[int, int, np.ndarray]],
    out: str,
    prefix: str,
    resize: int | None,
    quality: int,
    sizes: Sequence[int] = (),
) -> list[ShardJob]:
    """Returns one `ShardJob` per planned shard, carrying only its own rows' paths and labels."""
    jobs = []
    for fold, index, rows in plan:
        rows = rows.tolist()
        jobs.append(
            ShardJob(
                out=out,
                file=shard_name(prefix, fold, index),
                fold=fold,
                task=table.task,
                rows=rows,
                paths=[table.paths[r] for r in rows],
                shown_paths=[table.shown_paths[r] for r in rows],
                ids=[table.ids[r] for r in rows],
                labels=[table.labels[r] for r in rows],
                resize=resize,
                quality=quality,
                sizes=tuple(sizes),
            )
        )
    return jobs


def too_many_bad(skipped: list[dict], total: int, max_bad: float, final: bool) -> str | None:
    """Returns the failure message when the bad files exceed `max_bad` (or nothing is readable)."""
    if len(skipped) <= max_bad * total and (not final or len(skipped) < total):
        return None
    examples = "; ".join(f"{s['path']}: {s['reason']}" for s in skipped[:5])
    amount = f"{len(skipped)} of {total}" if final else f"at least {len(skipped)} of {total}"
    return (
        f"{amount} images are unusable, more than max_bad={max_bad:g} allows "
        f"(e.g. {examples}); fix or remove these files, or raise --max-bad"
    )


def _executor(workers: int) -> ProcessPoolExecutor:
    # fork: TensorFlow is already imported here; spawned workers would import it again (seconds
    # each). The workers only use Python files and gfile, which start no TensorFlow threads.
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else None)
    return ProcessPoolExecutor(max_workers=workers, mp_context=context)


def _report(done: int, total: int, records: int, progress: bool) -> None:
    if progress:
        end = "\n" if done == total else ""
        print(f"\rshards {done}/{total}, records {records}", end=end, file=sys.stderr, flush=True)


def run_jobs(
    jobs: list[ShardJob], workers: int, max_bad: float, total: int, progress: bool
) -> list[ShardResult]:
    """Writes every shard (in `workers` processes when > 1); stops early once too many are bad."""
    results, skipped = [], []

    def collect(result: ShardResult) -> None:
        results.append(result)
        skipped.extend(result.skipped)
        _report(len(results), len(jobs), sum(r.count for r in results), progress)
        message = too_many_bad(skipped, total, max_bad, final=False)
        if message:
            raise TFRecordsError(message)

    if workers == 1:
        for job in jobs:
            collect(write_shard(job))
        return results
    executor = _executor(workers)
    try:
        pending = {executor.submit(write_shard, job) for job in jobs}
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                collect(future.result())
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
    return results
