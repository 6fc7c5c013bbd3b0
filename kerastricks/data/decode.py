"""Image decoding and resizing as graph ops: DCT-downscaled JPEG decode and resize policies.

Every function here is made of TensorFlow graph ops (no `tf.py_function`), so that it runs
inside `tf.data` on a TPU host and keeps the pipeline serialisable.
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

from kerastricks._sizes import size_pair
from kerastricks.config.names import RESIZE_POLICIES
from kerastricks.config.validate import check_choice

# libjpeg decodes at 1/2, 1/4 or 1/8 scale by dropping DCT coefficients: far cheaper than a
# full decode followed by a downscale, and the result is already low-passed.
_JPEG_RATIOS = (1, 2, 4, 8)

# torchvision / timm RandomResizedCrop defaults.
RRC_SCALE = (0.08, 1.0)
RRC_RATIO = (3.0 / 4.0, 4.0 / 3.0)


def check_resize_policy(resize: str) -> str:
    """Returns `resize` when it names a policy, else raises a ConfigError (a ValueError)
    listing them, as the config's `data.resize` check does."""
    check_choice("resize", resize, RESIZE_POLICIES)
    return resize


def jpeg_ratio(crop_hw: tf.Tensor, target_hw: tuple[int, int]) -> tf.Tensor:
    """The largest DCT scale (1, 2, 4, 8) keeping `crop_hw / ratio >= target_hw`, as an index."""
    fits = tf.reduce_min(tf.cast(crop_hw, tf.int32) // tf.constant(target_hw, tf.int32))
    return tf.add_n([tf.cast(fits >= ratio, tf.int32) for ratio in _JPEG_RATIOS[1:]])


def _decode_jpeg_window(
    image_bytes: tf.Tensor,
    stored_hw: tf.Tensor,
    window: tf.Tensor | None,
    ratio_index: tf.Tensor,
) -> tf.Tensor:
    """Decodes the `[y, x, h, w]` window (stored pixels; None: all) at DCT scale `ratio_index`.

    The scale picks one of four decode ops through nested `tf.cond`s; the stored size is the
    caller's, read from the header once, and a whole image goes through `decode_jpeg`: a
    squash decode 5-10 % cheaper than a `tf.switch_case` of window decodes that re-read the
    header (benchmarks/README.md, "Lab notes").
    """

    def at(ratio: int) -> Callable[[], tf.Tensor]:
        def decode() -> tf.Tensor:
            if window is None:
                return tf.io.decode_jpeg(image_bytes, channels=3, ratio=ratio)
            if ratio == 1:
                return tf.io.decode_and_crop_jpeg(image_bytes, window, channels=3)
            # The crop window of a scaled decode is in scaled pixels.
            scaled_hw = (stored_hw + ratio - 1) // ratio
            begin = tf.minimum(window[:2] // ratio, scaled_hw - 1)
            size = tf.clip_by_value(window[2:] // ratio, 1, scaled_hw - begin)
            scaled = tf.concat([begin, size], axis=0)
            return tf.io.decode_and_crop_jpeg(image_bytes, scaled, channels=3, ratio=ratio)

        return decode

    return tf.cond(
        ratio_index < 2,
        lambda: tf.cond(ratio_index < 1, at(1), at(2)),
        lambda: tf.cond(ratio_index < 3, at(4), at(8)),
    )


def decode_image(
    image_bytes: tf.Tensor, target_size: int | tuple[int, int] | None = None
) -> tf.Tensor:
    """Decodes an image to uint8 `[h, w, 3]`, DCT-downscaled when the target is small.

    A JPEG whose stored size is at least twice `target_size` on both sides is decoded at
    1/2, 1/4 or 1/8 scale (the largest that still covers the target); the stored size comes
    from `tf.io.extract_jpeg_shape`, which reads the header only. Other formats (PNG, GIF's
    first frame, BMP) go through `tf.io.decode_image`. Grayscale and RGBA become RGB.

    Args:
        image_bytes: scalar string tensor, the encoded image.
        target_size: the size the caller will resize to, or None for a full decode.
    """
    target_hw = None if target_size is None else size_pair(target_size)
    return decode_window(image_bytes, _whole_image, target_hw)


def _whole_image(shape_hw: tf.Tensor) -> tf.Tensor:
    return tf.concat([[0, 0], shape_hw], 0)


def decode_window(
    image_bytes: tf.Tensor,
    window_fn: Callable[[tf.Tensor], tf.Tensor],
    target_hw: tuple[int, int] | None,
    copies: tf.Tensor | None = None,
) -> tf.Tensor:
    """Decodes the window `window_fn(stored [h, w])` (`[y, x, h, w]`) of any image format.

    JPEG: the stored size comes from the header and only the window is decoded, at the
    coarsest DCT scale that still covers `target_hw`. With `copies` (string `[K]`, smaller
    JPEG copies of the image, smallest first, "" where absent) the window is decoded from the
    smallest copy in which it still covers `target_hw` (`choose_copy`), else from the image.
    Other formats: full decode, then slice.
    """
    whole = window_fn is _whole_image

    def jpeg() -> tf.Tensor:
        stored = tf.io.extract_jpeg_shape(image_bytes)[:2]
        # The whole image is decoded by decode_jpeg: no window arithmetic to run.
        window = None if whole else window_fn(stored)
        if target_hw is None:
            return _decode_jpeg_window(image_bytes, stored, window, tf.constant(0))
        chosen, chosen_hw = image_bytes, stored
        if copies is not None and copies.shape[0]:
            chosen, chosen_hw, chosen_window = _from_copies(
                image_bytes, copies, stored, _whole_image(stored) if whole else window, target_hw
            )
            window = None if whole else chosen_window
        ratio_index = jpeg_ratio(chosen_hw if window is None else window[2:], target_hw)
        return _decode_jpeg_window(chosen, chosen_hw, window, ratio_index)

    def other() -> tf.Tensor:
        image = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
        image = tf.ensure_shape(image, [None, None, 3])
        window = window_fn(tf.shape(image)[:2])
        return tf.slice(image, tf.concat([window[:2], [0]], 0), tf.concat([window[2:], [3]], 0))

    image = tf.cond(tf.io.is_jpeg(image_bytes), jpeg, other)
    image.set_shape([None, None, 3])
    return image


def scale_windows(window: tf.Tensor, image_hw: tf.Tensor, copy_hws: tf.Tensor) -> tf.Tensor:
    """The `[y, x, h, w]` window of an image of size `image_hw`, in the pixels of each copy.

    Args:
        window: int32 `[4]`, in the image's pixels.
        image_hw: int32 `[2]`.
        copy_hws: int32 `[N, 2]`, the copies' decoded sizes (their actual ones: a copy's
            longer side is rounded).

    Returns:
        int32 `[N, 4]`: begin floored, size rounded, kept inside each copy (at least 1 px).
        A copy of the image's own size gets the window unchanged.
    """
    scale = tf.cast(copy_hws, tf.float32) / tf.cast(image_hw, tf.float32)
    window_f = tf.cast(window, tf.float32)
    begin = tf.cast(tf.floor(window_f[:2] * scale), tf.int32)
    size = tf.cast(tf.round(window_f[2:] * scale), tf.int32)
    begin = tf.clip_by_value(begin, 0, copy_hws - 1)
    size = tf.clip_by_value(size, 1, copy_hws - begin)
    return tf.concat([begin, size], axis=1)


def choose_copy(crop_hws: tf.Tensor, target_hw: tuple[int, int]) -> tf.Tensor:
    """Index of the first row of `crop_hws` (`[N, 2]`, candidates smallest first, the image
    last) whose crop is at least `target_hw` on both sides; the last row when none is.

    The rule of the DCT scale (`jpeg_ratio`) applied across stored copies first: the crop,
    measured in the candidate's pixels, must still cover the output.
    """
    covers = tf.reduce_all(crop_hws >= tf.constant(target_hw, tf.int32), axis=1)
    count = tf.shape(crop_hws)[0]
    return tf.reduce_min(tf.where(covers, tf.range(count), count - 1))


def _from_copies(
    image_bytes: tf.Tensor,
    copies: tf.Tensor,
    stored: tf.Tensor,
    window: tf.Tensor,
    target_hw: tuple[int, int],
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """(bytes, stored [h, w], window in its pixels) of the candidate `choose_copy` picks."""
    # A record without a copy of some size (its image was not larger) stands in its image.
    copies = tf.where(tf.strings.length(copies) > 0, copies, image_bytes)
    # One header read per copy (a few us): the copies' sizes are rounded, read, not assumed.
    hws = [tf.io.extract_jpeg_shape(copies[k])[:2] for k in range(copies.shape[0])]
    hws = tf.stack(hws + [stored])
    windows = scale_windows(window, stored, hws)
    index = choose_copy(windows[:, 2:], target_hw)
    candidates = tf.concat([copies, image_bytes[None]], axis=0)
    return candidates[index], hws[index], windows[index]


def center_crop_window(shape_hw: tf.Tensor, size: tuple[int, int]) -> tf.Tensor:
    """`[y, x, h, w]` of the largest central crop with the aspect ratio of `size`."""
    shape_f = tf.cast(shape_hw, tf.float32)
    scale = tf.minimum(shape_f[0] / size[0], shape_f[1] / size[1])
    crop = tf.cast(tf.round(scale * tf.constant(size, tf.float32)), tf.int32)
    crop = tf.clip_by_value(crop, 1, shape_hw)
    return tf.concat([(shape_hw - crop) // 2, crop], axis=0)


def random_crop_window(shape_hw: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """`[y, x, h, w]` of a random-resized-crop box (area 8-100 %, aspect 3/4-4/3).

    Follows torchvision/timm `RandomResizedCrop` (10 attempts, then the whole image) through
    TensorFlow's own `stateless_sample_distorted_bounding_box`.
    """
    begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.concat([shape_hw, [3]], 0),
        bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
        seed=seed,
        min_object_covered=0.0,
        aspect_ratio_range=RRC_RATIO,
        area_range=RRC_SCALE,
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    return tf.concat([begin[:2], crop_size[:2]], axis=0)


def resize(image: tf.Tensor, size: tuple[int, int]) -> tf.Tensor:
    """Bilinear resize to float32 `[h, w, 3]` in [0, 255].

    No antialiasing: the DCT decode has already brought the image within 2x of the target,
    where bilinear aliasing is small, and antialias=True costs ~2x on this step.
    """
    # uint8 is cast to float32 first (same values): TensorFlow's bilinear kernel is ~2x faster
    # on float32. Only a large downscale, which the DCT decode mostly avoids, pays more for the
    # cast than it saves, less than a tf.cond choosing per image would cost.
    out = tf.image.resize(tf.cast(image, tf.float32), size, method="bilinear")
    out.set_shape([size[0], size[1], 3])
    return out


def _window_fn(
    policy: str, size: tuple[int, int], seed: tf.Tensor | None
) -> Callable[[tf.Tensor], tf.Tensor]:
    check_resize_policy(policy)
    if policy == "squash":
        return _whole_image
    if policy == "center_crop":
        return lambda shape_hw: center_crop_window(shape_hw, size)
    if seed is None:
        raise ValueError("resize='random_resized_crop' needs a stateless seed of shape [2].")
    return lambda shape_hw: random_crop_window(shape_hw, seed)


def decode_and_resize(
    image_bytes: tf.Tensor,
    image_size: int | tuple[int, int],
    policy: str = "squash",
    seed: tf.Tensor | None = None,
    copies: tf.Tensor | None = None,
) -> tf.Tensor:
    """Decodes and resizes one encoded image to float32 `[h, w, 3]` by a resize policy.

    Policies: "squash" (whole image to the size, aspect not kept), "center_crop" (largest
    central crop with the target aspect), "random_resized_crop" (needs a stateless `seed`,
    shape [2]). Only the crop window is decoded, at the coarsest DCT scale that covers it,
    from the smallest stored copy that covers it when `copies` are given. The window is drawn
    in the image's pixels, so a seed gives the same crop with and without copies.

    Args:
        image_bytes: scalar string tensor.
        image_size: int or (height, width).
        policy: one of `RESIZE_POLICIES`.
        seed: int32/int64 tensor of shape [2], for "random_resized_crop".
        copies: string `[K]`, JPEG copies of the image, smallest first ("" where absent).
    """
    size = size_pair(image_size)
    window_fn = _window_fn(policy, size, seed)
    return resize(decode_window(image_bytes, window_fn, size, copies), size)


def crop_and_resize(
    image: tf.Tensor, image_size: int | tuple[int, int], policy: str, seed: tf.Tensor | None = None
) -> tf.Tensor:
    """Applies a resize policy to an already decoded image (the cached path)."""
    size = size_pair(image_size)
    window = _window_fn(policy, size, seed)(tf.shape(image)[:2])
    crop = tf.slice(image, tf.concat([window[:2], [0]], 0), tf.concat([window[2:], [3]], 0))
    return resize(crop, size)
