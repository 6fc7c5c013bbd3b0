"""One combined affine augmentation (rotate, shear, zoom, shift) in one resample, XLA-safe.

Keras' RandomRotation/RandomZoom/RandomTranslation resample once each through
`ImageProjectiveTransformV3`, which has no XLA TPU kernel in most TensorFlow versions. Here
the inverse affine map of each image is computed in closed form and the source pixels are
fetched with `tf.gather` and blended bilinearly: plain ops that XLA compiles everywhere, and a
single interpolation instead of three.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import tensorflow as tf

FILL_MODES = ("reflect", "nearest", "constant")
INTERPOLATIONS = ("bilinear", "nearest")


def affine_matrices(
    rotate: tf.Tensor,
    shear: tf.Tensor,
    zoom: tf.Tensor,
    shift_y: tf.Tensor,
    shift_x: tf.Tensor,
    height: int,
    width: int,
    flip_x: tf.Tensor | None = None,
    flip_y: tf.Tensor | None = None,
) -> tf.Tensor:
    """Inverse affine maps `[B, 6]` (output pixel -> input pixel) from per-image parameters.

    The forward map turns the content about the image centre by `rotate` degrees
    (counter-clockwise, as `tf.image.rot90` and Keras' RandomRotation), shears it by `shear`
    degrees along x, scales it by `zoom` (> 1 enlarges the content) and moves it by
    `shift_y`, `shift_x` pixels. Row `[a0, a1, a2, a3, a4, a5]` maps an output pixel (x, y)
    to the input point (a0 x + a1 y + a2, a3 x + a4 y + a5).

    Args:
        rotate, shear, zoom, shift_y, shift_x: float32 tensors of shape [B].
        height, width: image size in pixels.
        flip_x, flip_y: optional [B] tensors of +1 or -1: mirror the input first (a flip is
            one more affine factor, so it costs nothing in the same resample).
    """
    theta = rotate * (math.pi / 180.0)
    tan_shear = tf.tan(shear * (math.pi / 180.0))
    cos, sin = tf.cos(theta), tf.sin(theta)
    # Forward linear part A = zoom * R(theta) @ [[1, tan_shear], [0, 1]] in (x, y), y down.
    f00 = zoom * cos
    f01 = zoom * (cos * tan_shear + sin)
    f10 = -zoom * sin
    f11 = zoom * (cos - sin * tan_shear)
    det = f00 * f11 - f01 * f10
    i00, i01, i10, i11 = f11 / det, -f01 / det, -f10 / det, f00 / det
    # The forward map is A @ F with F = diag(flip_x, flip_y), so the inverse is F @ A^-1.
    if flip_x is not None:
        i00, i01 = i00 * flip_x, i01 * flip_x
    if flip_y is not None:
        i10, i11 = i10 * flip_y, i11 * flip_y
    cy, cx = (height - 1) / 2.0, (width - 1) / 2.0
    # input = c + A^-1 (output - c - shift)
    ox, oy = cx + shift_x, cy + shift_y
    a2 = cx - i00 * ox - i01 * oy
    a5 = cy - i10 * ox - i11 * oy
    return tf.stack([i00, i01, a2, i10, i11, a5], axis=1)


def affine_transform(
    images: tf.Tensor,
    transforms: tf.Tensor,
    fill_mode: str = "reflect",
    fill_value: float = 0.0,
    interpolation: str = "bilinear",
) -> tf.Tensor:
    """Resamples a batch `[B, H, W, C]` through per-image inverse affine maps `[B, 6]`.

    Built from `tf.gather` so that it compiles with XLA (TPU, `jit_compile=True`).

    Args:
        images: float tensor `[B, H, W, C]` with a static H, W and C.
        transforms: float32 `[B, 6]` rows from `affine_matrices`.
        fill_mode: "reflect", "nearest" or "constant" (points outside the image).
        fill_value: value of outside points for "constant".
        interpolation: "bilinear" or "nearest".
    """
    _check_modes(fill_mode, interpolation)
    batch = tf.shape(images)[0]
    height, width, channels = images.shape[1], images.shape[2], images.shape[3]
    # Source points of every output pixel in one matmul: [B, 2, 3] @ [3, H*W] -> (x, y) rows.
    ys, xs = tf.meshgrid(
        tf.range(height, dtype=tf.float32), tf.range(width, dtype=tf.float32), indexing="ij"
    )
    grid = tf.stack([tf.reshape(xs, [-1]), tf.reshape(ys, [-1]), tf.ones([height * width])])
    coords = tf.matmul(tf.reshape(tf.cast(transforms, tf.float32), [-1, 2, 3]), grid)
    size = tf.constant([[[width], [height]]], tf.float32)
    if fill_mode == "reflect":
        # Half-sample symmetric (d c b a | a b c d | d c b a), as Keras' "reflect".
        coords = size - 0.5 - tf.abs(tf.math.floormod(coords + 0.5, 2.0 * size) - size)
    if fill_mode != "constant":
        coords = tf.clip_by_value(coords, 0.0, size - 1.0)
    if interpolation == "nearest":
        coords = tf.round(coords)
    low = tf.floor(coords)
    frac = coords - low
    x0, y0 = tf.unstack(tf.cast(low, tf.int32), axis=1)
    wx, wy = tf.unstack(frac, axis=1)
    row_base = tf.range(batch)[:, None] * (height * width)
    if fill_mode == "constant":
        # Corners outside the image get weight 0 and the missing weight goes to fill_value:
        # the same as blending fill-valued corners, without a select per corner and channel.
        def axis_weights(low_i, w, limit):
            return [
                tf.where((low_i >= 0) & (low_i <= limit - 1), 1.0 - w, 0.0),
                tf.where((low_i >= -1) & (low_i <= limit - 2), w, 0.0),
            ], [tf.clip_by_value(low_i, 0, limit - 1), tf.clip_by_value(low_i + 1, 0, limit - 1)]

        weights_x, cols = axis_weights(x0, wx, width)
        weights_y, rows = axis_weights(y0, wy, height)
        rows = [row_base + r * width for r in rows]
    else:
        # Coordinates are inside [0, size - 1]; the far neighbour of the last row or column
        # has weight 0, so it is clamped to stay a valid index.
        weights_x, weights_y = [1.0 - wx, wx], [1.0 - wy, wy]
        top = row_base + y0 * width
        rows = [top, top + tf.cast(y0 < height - 1, tf.int32) * width]
        cols = [x0, x0 + tf.cast(x0 < width - 1, tf.int32)]
    flat = tf.reshape(images, [-1, channels])
    dtype = images.dtype
    pairs = [(0, 0)] if interpolation == "nearest" else [(0, 0), (0, 1), (1, 0), (1, 1)]
    weights = [weights_y[i] * weights_x[j] for i, j in pairs]
    terms = [
        tf.gather(flat, rows[i] + cols[j]) * tf.cast(weight, dtype)[..., None]
        for (i, j), weight in zip(pairs, weights, strict=True)
    ]
    out = tf.add_n(terms)
    if fill_mode == "constant" and fill_value != 0:
        out += tf.cast((1.0 - tf.add_n(weights)) * fill_value, dtype)[..., None]
    return tf.reshape(out, tf.shape(images))


def _range(value: float | Sequence[float], name: str, center: float = 0.0) -> tuple[float, float]:
    """A symmetric `value` becomes (center - value, center + value); a pair is kept."""
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"RandomAffine: {name} must be >= 0. Received: {name}={value}")
        return (center - float(value), center + float(value))
    if isinstance(value, (tuple, list)) and len(value) == 2 and value[0] <= value[1]:
        return (float(value[0]), float(value[1]))
    raise ValueError(
        f"RandomAffine: {name} must be a number or a (low, high) pair. Received: {name}={value!r}"
    )


FLIPS = (None, "horizontal", "vertical", "horizontal_and_vertical")


def _ranges(rotate, shear, zoom, shift) -> dict[str, tuple[float, float]]:
    """The (low, high) range of each random parameter; raises on invalid arguments."""
    ranges = {
        "rotate": _range(rotate, "rotate"),
        "shear": _range(shear, "shear"),
        "zoom": _range(zoom, "zoom", center=1.0),
        "shift_y": _range(shift, "shift"),
        "shift_x": _range(shift, "shift"),
    }
    if ranges["zoom"][0] <= 0:
        raise ValueError(f"RandomAffine: zoom must keep the scale > 0. Received: zoom={zoom}")
    return ranges


def _check_modes(fill_mode: str, interpolation: str) -> None:
    if fill_mode not in FILL_MODES:
        raise ValueError(f"fill_mode must be one of {FILL_MODES}. Received: {fill_mode!r}")
    if interpolation not in INTERPOLATIONS:
        raise ValueError(
            f"interpolation must be one of {INTERPOLATIONS}. Received: {interpolation!r}"
        )


def _check_flip(flip: str | None) -> None:
    if flip not in FLIPS:
        raise ValueError(f"RandomAffine: flip must be one of {FLIPS}. Received: flip={flip!r}")


def random_affine(
    images: tf.Tensor,
    seed: tf.Tensor,
    rotate: float | Sequence[float] = 0.0,
    shear: float | Sequence[float] = 0.0,
    zoom: float | Sequence[float] = 0.0,
    shift: float | Sequence[float] = 0.0,
    fill_mode: str = "reflect",
    fill_value: float = 0.0,
    interpolation: str = "bilinear",
    flip: str | None = None,
) -> tf.Tensor:
    """Applies a random affine map per image of a batch `[B, H, W, C]` (stateless `seed`).

    Args:
        images: float `[B, H, W, C]`.
        seed: int tensor of shape [2] (`tf.random.stateless_*` convention).
        rotate: degrees; uniform in [-rotate, rotate], or a (low, high) pair.
        shear: degrees along x; uniform in [-shear, shear], or a pair.
        zoom: content scale uniform in [1 - zoom, 1 + zoom], or a (low, high) pair of scales.
        shift: fraction of the side; uniform in [-shift, shift] on each axis, or a pair.
        fill_mode, fill_value, interpolation: see `affine_transform`.
        flip: None, "horizontal", "vertical" or "horizontal_and_vertical": mirror each
            image with probability 0.5 per axis, in the same resample.
    """
    _check_flip(flip)
    ranges = _ranges(rotate, shear, zoom, shift)
    batch = tf.shape(images)[0]
    draws = tf.random.stateless_uniform([7, batch], seed=seed)
    params = {}
    for row, (name, (low, high)) in enumerate(ranges.items()):
        params[name] = low + (high - low) * draws[row]
    flips = tf.where(draws[5:] < 0.5, -1.0, 1.0)
    height, width = images.shape[1], images.shape[2]
    transforms = affine_matrices(
        params["rotate"],
        params["shear"],
        params["zoom"],
        params["shift_y"] * height,
        params["shift_x"] * width,
        height,
        width,
        flip_x=flips[0] if flip in ("horizontal", "horizontal_and_vertical") else None,
        flip_y=flips[1] if flip in ("vertical", "horizontal_and_vertical") else None,
    )
    return affine_transform(images, transforms, fill_mode, fill_value, interpolation)


class RandomAffine(tf.keras.layers.Layer):
    """Random rotation, shear, zoom and shift in one resample, compilable with XLA.

    One bilinear interpolation instead of the three that chaining Keras' RandomRotation,
    RandomZoom and RandomTranslation costs, and no `ImageProjectiveTransformV3` (no XLA TPU
    kernel), so it can run in `tf.data` or inside a model on TPU. Active only when
    `training=True`, like Keras' augmentation layers.

    Example:
    ```python
    layer = RandomAffine(rotate=15, shear=5, zoom=0.1, shift=0.1, flip="horizontal", seed=42)
    augmented = layer(images, training=True)  # images: float [B, H, W, 3]
    ```

    Args:
        rotate: degrees, uniform in [-rotate, rotate] (or a (low, high) pair).
        shear: degrees along x, uniform in [-shear, shear] (or a pair).
        zoom: content scale in [1 - zoom, 1 + zoom] (or a (low, high) pair of scales).
        shift: fraction of the side on each axis, in [-shift, shift] (or a pair).
        fill_mode: "reflect" (Keras' default), "nearest" or "constant".
        fill_value: outside value for "constant".
        interpolation: "bilinear" or "nearest".
        flip: None, "horizontal", "vertical" or "horizontal_and_vertical": random mirror in
            the same resample (cheaper than a separate RandomFlip).
        seed: int seed for the layer's random generator.
    """

    def __init__(
        self,
        rotate: float | Sequence[float] = 0.0,
        shear: float | Sequence[float] = 0.0,
        zoom: float | Sequence[float] = 0.0,
        shift: float | Sequence[float] = 0.0,
        fill_mode: str = "reflect",
        fill_value: float = 0.0,
        interpolation: str = "bilinear",
        flip: str | None = None,
        seed: int | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        _check_flip(flip)
        _check_modes(fill_mode, interpolation)
        _ranges(rotate, shear, zoom, shift)
        self.rotate, self.shear, self.zoom, self.shift = rotate, shear, zoom, shift
        self.fill_mode, self.fill_value = fill_mode, fill_value
        self.interpolation, self.flip, self.seed = interpolation, flip, seed
        self._generator: tf.random.Generator | None = None

    def augment(self, images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        """Stateless form: the same `seed` (int tensor [2]) gives the same output."""
        return random_affine(
            images,
            seed,
            self.rotate,
            self.shear,
            self.zoom,
            self.shift,
            self.fill_mode,
            self.fill_value,
            self.interpolation,
            self.flip,
        )

    def call(self, inputs: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        if not training:
            return inputs
        if self._generator is None:
            self._generator = (
                tf.random.Generator.from_non_deterministic_state()
                if self.seed is None
                else tf.random.Generator.from_seed(self.seed)
            )
        batched = inputs if inputs.shape.rank == 4 else inputs[None]
        outputs = self.augment(batched, self._generator.make_seeds(1)[:, 0])
        return outputs if inputs.shape.rank == 4 else outputs[0]

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            rotate=self.rotate,
            shear=self.shear,
            zoom=self.zoom,
            shift=self.shift,
            fill_mode=self.fill_mode,
            fill_value=self.fill_value,
            interpolation=self.interpolation,
            flip=self.flip,
            seed=self.seed,
        )
        return config
