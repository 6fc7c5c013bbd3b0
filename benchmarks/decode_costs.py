"""Where the input pipeline's time goes: CPU cost per image of each step, one thread.

On the 384 px JPEGs of `benchmarks/pipeline.py` (written there on its first run), prints the
microseconds per image of: a full JPEG decode at DCT scale 1, 2, 4 and 8, the decode of a
centred 288 px window at each scale (at scale 2 also resized to 128 px), the random-resized-crop
decode of the training pipeline at 128 and 64 px (alone and resized), and the XLA-compiled
flip + affine on batches of 64 images of 128 and 64 px. Each cost is the best of several
passes over 400 images minus the cost of the same loop doing nothing, with tf.data held to one
thread. Then the whole pipelines stage by stage, as CPU time per image in one thread (a fresh
iterator per pass, so no other pipeline works in the background): a full decode of the stored
image (pipeline.py's case a), the Keras loader at 128 and 64 px (cases c, h), `build_dataset`
without augmentation, and with the flip + affine, at 128 and 64 px, from the records with
copies too (cases j, i), and the least work of reading copies at 64 px (every crop from the
128 px copy), with the Keras loader's CPU per image over ours: the best ratio this CPU allows.
It shows why `pipeline.py`'s goals are hard on this CPU: Huffman decoding, which a coarser DCT
scale cannot skip, sets a floor near a full decode's cost. The last line is one JSON object.

    .venv/bin/python benchmarks/decode_costs.py
"""

from __future__ import annotations

import kerastricks  # noqa: F401  (selects tf-keras before TensorFlow is imported)

# isort: split
import json
import pathlib
import sys
import time
from collections.abc import Callable

import tensorflow as tf

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import pipeline as pipeline_benchmark  # noqa: E402  (the data it writes, and its augmentation)

from kerastricks.data import RecordSource, build_dataset, decode, resolve_records  # noqa: E402
from kerastricks.data.augment import resolve_augmentations  # noqa: E402

IMAGES = 400
PASSES = 5
WINDOW = 288
STAGE_IMAGES = 1920
STAGE_PASSES = 3


def _one_thread(dataset: tf.data.Dataset) -> tf.data.Dataset:
    options = tf.data.Options()
    options.threading.private_threadpool_size = 1
    options.threading.max_intra_op_parallelism = 1
    options.autotune.enabled = False
    return dataset.with_options(options)


def _turns(names: list[str], index: int) -> list[str]:
    """The cases' order in pass `index`: reversed every other pass (like with like)."""
    return names if index % 2 == 0 else names[::-1]


def per_image_us(
    blobs: tf.Tensor, cases: dict[str, Callable[[tf.Tensor, tf.Tensor], tf.Tensor]]
) -> dict[str, float]:
    """Best wall time per image of mapping each case over (encoded image, seed), one thread.

    Each image has its own stateless seed [2] (the same in every pass). The cases take turns
    pass by pass, in reversed order every other pass, so that a slow spell of the machine
    falls on all.
    """
    seeds = tf.random.stateless_uniform(
        [len(blobs), 2], seed=[0, 1], maxval=2**31 - 1, dtype=tf.int64
    )
    elements = tf.data.Dataset.from_tensor_slices((blobs, seeds))
    datasets = {name: _one_thread(elements.map(fn)) for name, fn in cases.items()}
    best = dict.fromkeys(cases, float("inf"))
    for index in range(PASSES + 1):  # pass 0 warms up: traces the functions, fills caches
        for name in _turns(list(datasets), index):
            dataset = datasets[name]
            start = time.perf_counter()
            for _ in dataset:
                pass
            if index:
                best[name] = min(best[name], (time.perf_counter() - start) / len(blobs))
    return {name: seconds * 1e6 for name, seconds in best.items()}


def affine_batch_us(batch: int = 64, size: int = 128) -> float:
    """Per image cost of the benchmark's `[RandomFlip, affine]` on one float batch (XLA)."""
    pipeline = resolve_augmentations(pipeline_benchmark.AUGMENT, seed=0)
    images = tf.random.stateless_uniform([batch, size, size, 3], seed=[1, 2], maxval=255.0)
    labels = tf.zeros([batch, 2])
    seed = tf.constant([3, 4], tf.int64)
    pipeline(images, labels, seed)[0].numpy()
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        pipeline(images, labels, seed)[0].numpy()
        best = min(best, time.perf_counter() - start)
    return best / batch * 1e6


def stage_cpu_us(source: RecordSource, copies: RecordSource) -> dict[str, float]:
    """CPU time per image of whole pipelines with tf.data held to one thread (best pass).

    With copies: ours at 64 and 128 px from the records with copies, and the least work of
    reading copies (`least_work` on `image_128`: every crop decoded from the 128 px copy,
    whether it covers the output or not), the bound of what copies can give at 64 px.
    """
    batch, augment = pipeline_benchmark.BATCH, pipeline_benchmark.AUGMENT
    cases = {
        "stage_full_decode_batch": lambda: pipeline_benchmark.decode_only(source.files),
        "stage_keras_dir_128": lambda: pipeline_benchmark.keras_loader(128),
        "stage_keras_dir_64": lambda: pipeline_benchmark.keras_loader(64),
        "stage_64_least_work_copy_128": lambda: pipeline_benchmark.least_work(
            copies.files, 64, key="image_128"
        ),
    }
    for size in (128, 64):
        cases[f"stage_{size}_ours_no_augment"] = lambda size=size: build_dataset(
            source, size, batch, True, resize="random_resized_crop", repeat=True
        )
        cases[f"stage_{size}_ours_flip_affine"] = lambda size=size: build_dataset(
            source, size, batch, True, augment, resize="random_resized_crop", repeat=True
        )
        cases[f"stage_{size}_ours_copies_flip_affine"] = lambda size=size: build_dataset(
            copies, size, batch, True, augment, resize="random_resized_crop", repeat=True
        )
    best = dict.fromkeys(cases, float("inf"))
    for index in range(STAGE_PASSES):
        for name in _turns(list(cases), index):
            make = cases[name]
            iterator = iter(_one_thread(make()))
            for _ in range(4):
                next(iterator)
            seen, start = 0, time.process_time()
            while seen < STAGE_IMAGES:
                seen += int(next(iterator)[0].shape[0])
            best[name] = min(best[name], (time.process_time() - start) / seen * 1e6)
            del iterator  # its background threads stop before the next case is timed
    return best


def main() -> None:
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    pipeline_benchmark.main_data()
    source = resolve_records(str(pipeline_benchmark.RECORDS))
    spec = {"image": tf.io.FixedLenFeature([], tf.string)}
    records = tf.data.TFRecordDataset(source.files).take(IMAGES)
    blobs = tf.stack([tf.io.parse_single_example(r, spec)["image"] for r in records])
    cases: dict[str, Callable[[tf.Tensor, tf.Tensor], tf.Tensor]] = {
        "loop": lambda b, _: tf.strings.length(b)
    }
    for ratio in (1, 2, 4, 8):
        cases[f"full_ratio_{ratio}"] = lambda b, _, r=ratio: tf.io.decode_jpeg(
            b, channels=3, ratio=r
        )
    side = pipeline_benchmark.SIDE
    for ratio in (1, 2, 4):
        begin, length = (side - WINDOW) // 2 // ratio, WINDOW // ratio
        window = tf.constant([begin, begin, length, length])
        cases[f"window_{WINDOW}_ratio_{ratio}"] = lambda b, _, w=window, r=ratio: (
            tf.io.decode_and_crop_jpeg(b, w, channels=3, ratio=r)
        )
    crop = cases[f"window_{WINDOW}_ratio_2"]
    cases[f"window_{WINDOW}_ratio_2_resized_128"] = lambda b, s: decode.resize(
        crop(b, s), (128, 128)
    )
    # What the training pipeline decodes: a random-resized-crop window at the coarsest DCT
    # scale that covers the target, alone and then resized to the target.
    for size in (128, 64):
        cases[f"random_crop_decode_{size}"] = lambda b, s, n=size: decode.decode_window(
            b, lambda hw: decode.random_crop_window(hw, s), (n, n)
        )
        cases[f"random_crop_decode_resize_{size}"] = lambda b, s, n=size: decode.decode_and_resize(
            b, n, "random_resized_crop", s
        )
    costs = per_image_us(blobs, cases)
    loop = costs.pop("loop")  # the loop's own cost, subtracted from the others
    result = {name: round(value - loop, 1) for name, value in costs.items()}
    for size in (128, 64):
        result[f"flip_affine_{size}_xla"] = round(affine_batch_us(size=size), 1)
    result["loop_overhead"] = round(loop, 1)
    copies = resolve_records(str(pipeline_benchmark.RECORDS_COPIES))
    stages = stage_cpu_us(source, copies)
    result.update({name: round(value, 1) for name, value in stages.items()})
    for size in (64, 128):
        keras = stages[f"stage_keras_dir_{size}"]
        result[f"ratio_keras_over_ours_copies_{size}"] = round(
            keras / stages[f"stage_{size}_ours_copies_flip_affine"], 3
        )
    result["ratio_keras_over_least_work_copy_128_at_64"] = round(
        stages["stage_keras_dir_64"] / stages["stage_64_least_work_copy_128"], 3
    )
    width = max(map(len, result))
    for name, value in result.items():
        unit = "" if name.startswith("ratio") else " us/image"
        print(f"{name:<{width}}  {value:8.1f}{unit}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
