"""Image checks: cheap for complete JPEG/PNG, still catching truncation; resize + re-encode."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from tfrecords_tools.images import BadImageError, check_image, resize_image


def _encoded(array: np.ndarray, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt, **options)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    from sklearn.datasets import load_sample_images

    return load_sample_images().images[0][:60, :90]


@pytest.mark.parametrize("options", [{}, {"progressive": True}, {"quality": 50}])
def test_jpeg_size_matches_pillow(photo, options):
    stored = check_image(_encoded(photo, "JPEG", **options))
    assert (stored.height, stored.width, stored.format) == (60, 90, "JPEG")


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_truncation_is_caught(photo, fmt, keep):
    data = _encoded(photo, fmt)
    with pytest.raises(BadImageError, match="truncated"):
        check_image(data[: int(len(data) * keep)])


def test_trailing_bytes_after_jpeg_end_are_accepted(photo):
    stored = check_image(_encoded(photo, "JPEG") + b"camera trailer")
    assert (stored.height, stored.width) == (60, 90)


def test_formats_tensorflow_cannot_decode_are_refused(photo):
    with pytest.raises(BadImageError, match="TIFF cannot be decoded .* --resize"):
        check_image(_encoded(photo, "TIFF"))


def test_not_an_image():
    with pytest.raises(BadImageError, match="not an image"):
        check_image(b"%PDF-1.4 not an image at all")


def test_resize_keeps_aspect_and_grey(photo):
    stored = resize_image(_encoded(photo, "PNG"), 45, quality=90)
    assert (stored.height, stored.width) == (30, 45)
    assert Image.open(io.BytesIO(stored.data)).mode == "RGB"
    grey = resize_image(_encoded(photo[..., 0], "PNG"), 30)
    assert Image.open(io.BytesIO(grey.data)).mode == "L"
    rgba = np.dstack([photo, np.full(photo.shape[:2], 128, np.uint8)])
    assert Image.open(io.BytesIO(resize_image(_encoded(rgba, "PNG"), 9).data)).size == (9, 6)


def test_resize_of_a_truncated_file_is_a_bad_image(photo):
    data = _encoded(photo, "JPEG")
    with pytest.raises(BadImageError, match="truncated"):
        resize_image(data[: len(data) // 2], 32)
