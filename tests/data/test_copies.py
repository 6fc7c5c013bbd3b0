"""Stored copies (`write --sizes`): the copy each crop decodes from, and the pipeline over them."""

import kerastricks  # noqa: F401  (selects tf-keras before TensorFlow is imported)

# isort: split
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from PIL import Image

from kerastricks.data import build_dataset, decode
from kerastricks.data.pipeline import stored_sizes_used

PY_FUNCS = {"PyFunc", "PyFuncStateless", "EagerPyFunc", "EagerPyFuncV2"}
AUGMENT = [{"name": "RandomFlip", "mode": "horizontal"}]
CROP = "random_resized_crop"


def _choice(window, image_hw, copy_hws, target):
    hws = tf.constant(copy_hws + [image_hw])
    windows = decode.scale_windows(tf.constant(window), tf.constant(image_hw), hws)
    return int(decode.choose_copy(windows[:, 2:], (target, target)))


@pytest.mark.parametrize(
    "window, target, chosen",
    [
        ([0, 0, 384, 512], 64, 0),  # whole image: the 128 px copy covers 64 and 128 px
        ([0, 0, 384, 512], 128, 0),
        ([0, 0, 384, 512], 129, 1),  # needs the 256 px copy
        ([0, 0, 384, 512], 257, 2),  # needs the image itself
        ([100, 100, 192, 192], 64, 0),  # 64 px in the 128 copy: covers exactly
        ([100, 100, 192, 192], 65, 1),  # 128 px in the 256 copy
        ([100, 100, 192, 192], 129, 2),
        ([0, 0, 24, 24], 16, 1),  # 16 px in the 256 copy
        ([0, 0, 12, 12], 16, 2),  # too small even in the image: the image (upscaled)
    ],
)
def test_the_smallest_copy_whose_crop_covers_the_output_is_chosen(window, target, chosen):
    # A 384x512 image with copies of shorter side 128 (128x171) and 256 (256x341).
    assert _choice(window, [384, 512], [[128, 171], [256, 341]], target) == chosen


def test_windows_are_scaled_into_each_copy():
    windows = decode.scale_windows(
        tf.constant([100, 101, 192, 250]),
        tf.constant([384, 512]),
        tf.constant([[128, 171], [384, 512]]),
    )
    # 128 / 384 and 171 / 512: begin floored, size rounded; the image's own size: unchanged.
    np.testing.assert_array_equal(windows, [[33, 33, 64, 83], [100, 101, 192, 250]])


def _jpeg(image: np.ndarray, size: tuple[int, int] | None = None) -> bytes:
    import io

    picture = Image.fromarray(image)
    if size is not None:
        picture = picture.resize((size[1], size[0]), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def photo_with_copies(kt):
    photo = kt.sample_images(1, size=192, seed=3)[0][:144]  # 144x192
    return photo, _jpeg(photo), _jpeg(photo, (24, 32)), _jpeg(photo, (48, 64))


def test_decode_reads_the_chosen_copy(photo_with_copies):
    _, image, small, medium = photo_with_copies
    copies = tf.constant([small, medium])
    # Squash to 40 px: the 48 px copy is the smallest that covers it, decoded whole.
    ours = decode.decode_and_resize(tf.constant(image), 40, "squash", copies=copies)
    np.testing.assert_array_equal(ours, decode.decode_and_resize(tf.constant(medium), 40))
    # A record without the 48 px copy ("") reads the image itself.
    gap = tf.constant([small, b""])
    np.testing.assert_array_equal(
        decode.decode_and_resize(tf.constant(image), 40, "squash", copies=gap),
        decode.decode_and_resize(tf.constant(image), 40),
    )
    # Random crops: the window is drawn in the image's pixels, then read from the copy
    # (seed 0: [4, 61, 124, 121], 21x20 in the 24 px copy; seed 4: [37, 10, 79, 79], 13 px in
    # the 24 px copy and 26 px in the 48 px one).
    for seed, chosen in ((0, small), (4, medium)):
        window = decode.random_crop_window(tf.constant([144, 192]), tf.constant([seed, 2]))
        hw = tf.io.extract_jpeg_shape(chosen)[:2]
        scaled = decode.scale_windows(window, tf.constant([144, 192]), hw[None])[0]
        expected = decode.resize(tf.io.decode_and_crop_jpeg(chosen, scaled, channels=3), (16, 16))
        ours = decode.decode_and_resize(
            tf.constant(image), 16, "random_resized_crop", tf.constant([seed, 2]), copies
        )
        np.testing.assert_array_equal(ours, expected)
    # Larger than every copy: the image, exactly as without copies.
    seed = tf.constant([4, 2])
    for policy in ("squash", "center_crop", "random_resized_crop"):
        np.testing.assert_array_equal(
            decode.decode_and_resize(tf.constant(image), 100, policy, seed, copies),
            decode.decode_and_resize(tf.constant(image), 100, policy, seed),
        )


@pytest.fixture(scope="module")
def photo_records(kt, tmp_path_factory):
    """12 photos of 96x128 px as records with 32 and 48 px copies, and without copies."""
    from tfrecords_tools import write_records

    root = tmp_path_factory.mktemp("copies")
    rows = []
    for i, image in enumerate(kt.sample_images(12, size=128, seed=1)):
        Image.fromarray(image[:96]).save(root / f"p{i}.jpg", quality=90)
        rows.append({"path": f"p{i}.jpg", "label": i % 3})
    pd.DataFrame(rows).to_csv(root / "photos.csv", index=False)
    options = {"csv": str(root / "photos.csv"), "folds": 2, "progress": False}
    write_records(str(root / "copies"), sizes=[32, 48], **options)
    write_records(str(root / "plain"), **options)
    return str(root / "copies"), str(root / "plain")


def _batch(records, size, **options):
    dataset = build_dataset(records, size, 12, True, seed=7, resize=CROP, **options)
    images, labels = next(iter(dataset))
    return images.numpy(), labels.numpy()


def test_pipeline_reads_copies_seeded_static_and_close_to_the_full_decode(photo_records):
    copies, plain = photo_records
    dataset = build_dataset(copies, 24, 12, True, AUGMENT, seed=3, resize=CROP)
    assert dataset.element_spec[0].shape == (12, 24, 24, 3)
    first = next(iter(dataset))[0].numpy()
    again = build_dataset(copies, 24, 12, True, AUGMENT, seed=3, resize=CROP)
    np.testing.assert_array_equal(first, next(iter(again))[0])
    graph = tf.compat.v1.GraphDef.FromString(dataset._as_serialized_graph().numpy())
    names = {node.op for f in graph.library.function for node in f.node_def}
    assert {"ExtractJpegShape", "DecodeAndCropJpeg"} <= names
    assert not names & PY_FUNCS
    # The same crops (same seed), decoded from the copies or from the images: close, not equal.
    with_copies, labels = _batch(copies, 24)
    full, full_labels = _batch(plain, 24)
    np.testing.assert_array_equal(labels, full_labels)
    difference = np.abs(with_copies - full).mean()
    assert 0.1 < difference < 8.0, difference
    # At 64 px no copy covers any crop: exactly the pipeline without copies.
    np.testing.assert_array_equal(_batch(copies, 64)[0], _batch(plain, 64)[0])
    evaluation = [b[0].shape[0] for b in build_dataset(copies, 40, 5, False)]
    assert evaluation == [5, 5, 2]


def test_copies_with_cache_and_merged_streams(photo_records):
    copies, plain = photo_records
    cached, _ = _batch(copies, 24, cache=True)
    assert cached.shape == (12, 24, 24, 3) and cached.std() > 10.0
    # Pseudo-labelled records without copies merge into a stream that has them.
    merged, _ = _batch(copies, 24, extra_records=plain, exclude_folds=[1])
    assert merged.shape == (12, 24, 24, 3) and merged.std() > 10.0


def test_stored_sizes_used(photo_records):
    copies, plain = photo_records
    assert stored_sizes_used(plain, 24) == ["full"]
    # Squash / center-crop: the smallest copy whose shorter side covers the output.
    assert stored_sizes_used(copies, 24, "squash") == ["32"]
    assert stored_sizes_used(copies, 40, "center_crop") == ["48"]
    assert stored_sizes_used(copies, 64, "squash") == ["full"]
    # Random crops down to 24.5 % of the shorter side: 0.245 * 32 < 24 -> the 48 px copy,
    # 0.245 * 48 < 24 -> the image too.
    assert stored_sizes_used(copies, 24) == ["32", "48", "full"]
    assert stored_sizes_used(copies, 7) == ["32"]
    assert stored_sizes_used(copies, 10) == ["32", "48"]
    # Cached: squashed to 1.25x the size (30 px) before the crop.
    assert stored_sizes_used(copies, 24, cache=True) == ["32"]
