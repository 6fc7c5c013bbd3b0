"""Image checking (cheap but sufficient to catch truncation) and resize + JPEG re-encoding."""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import tensorflow as tf
from PIL import Image

# The formats that `tf.io.decode_image` reads; others must be re-encoded (--resize).
TF_DECODABLE = ("JPEG", "PNG", "GIF", "BMP", "WEBP")
_JPEG_START = b"\xff\xd8\xff"
_JPEG_END = b"\xff\xd9"
# Start-of-frame markers (baseline, progressive, lossless, arithmetic), which hold the size.
_JPEG_FRAME_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


class BadImageError(Exception):
    """An input file that is not a usable image; the message is the reason the manifest lists."""


@dataclass
class StoredImage:
    """The bytes that go into a record and what they hold."""

    data: bytes
    height: int
    width: int
    format: str


def read_bytes(path: str) -> bytes:
    """Reads a whole file (local or any `tf.io.gfile` scheme); a missing file is a bad image."""
    try:
        if "://" in path:
            with tf.io.gfile.GFile(path, "rb") as f:
                data = f.read()
        else:
            data = _read_local(path)
    except (tf.errors.NotFoundError, FileNotFoundError):
        raise BadImageError("missing file") from None
    except (IsADirectoryError, PermissionError) as error:
        raise BadImageError(f"unreadable: {error.strerror}") from None
    if not data:
        raise BadImageError("empty file")
    return data


def _read_local(path: str) -> bytes:
    # open/fstat/read/close and nothing else: under a quarter of GFile's time per photo
    # (benchmarks/README.md, "Lab notes").
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        data = os.read(fd, size + 1)
        if len(data) <= size:  # a short read of a regular file is its end
            return data
        chunks = [data]  # the file grew since fstat: read on to its end
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _broken_data_is_bad_image() -> Iterator[None]:
    try:
        yield
    except Image.UnidentifiedImageError:
        raise BadImageError("not an image: Pillow cannot identify the format") from None
    except BadImageError:
        raise
    except Exception as error:  # Pillow raises many types for broken data; all mean "unusable".
        raise BadImageError(f"truncated or corrupt image: {error}") from None


def _open(data: bytes) -> Image.Image:
    with _broken_data_is_bad_image():
        return Image.open(io.BytesIO(data))


def _full_load(data: bytes) -> None:
    with _broken_data_is_bad_image():
        _open(data).load()


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """Returns (height, width) from the frame header of a complete JPEG (SOI ... EOI), or None.

    Walks the marker segments to the frame header, the structure Pillow's JPEG `verify()`
    checks, at a tenth of its cost; files it cannot vouch for go through Pillow.
    """
    if not data.startswith(_JPEG_START) or not data.rstrip(b"\x00").endswith(_JPEG_END):
        return None
    position, end = 2, len(data) - 9
    while position < end:
        if data[position] != 0xFF:
            return None
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte before a marker
            position += 1
        elif marker in _JPEG_FRAME_MARKERS:
            height = int.from_bytes(data[position + 5 : position + 7], "big")
            width = int.from_bytes(data[position + 7 : position + 9], "big")
            return (height, width) if height and width else None
        else:
            position += 2 + int.from_bytes(data[position + 2 : position + 4], "big")
    return None


def check_image(data: bytes, full: bool = False) -> StoredImage:
    """Checks that `data` is a complete image that TensorFlow can decode, without decoding it.

    A JPEG must have an intact marker structure up to its frame header and end with the EOI
    marker, which catches truncation (`_jpeg_size`). Otherwise Pillow's `verify()` parses the
    headers and, for PNG, checks every chunk's CRC up to IEND, which catches truncation too;
    JPEGs that fail the quick walk (e.g. trailing bytes after EOI, which are legal) and other
    formats are then fully decoded. Every file is fully decoded when `full=True`. The quick
    walk costs under 1 % of a full decode.

    Raises:
        BadImageError: with the reason (not an image, truncated, format TF cannot decode).
    """
    size = None if full else _jpeg_size(data)
    if size is not None:
        return StoredImage(data=data, height=size[0], width=size[1], format="JPEG")
    image = _open(data)
    image_format, (width, height) = image.format, image.size
    if image_format not in TF_DECODABLE:
        raise BadImageError(
            f"format {image_format} cannot be decoded by tf.io.decode_image; "
            "use --resize to re-encode it as JPEG"
        )
    with _broken_data_is_bad_image():
        image.verify()
    if full or image_format != "PNG":
        _full_load(data)
    return StoredImage(data=data, height=height, width=width, format=image_format)


def resize_image(data: bytes, size: int, quality: int = 95) -> StoredImage:
    """Decodes `data`, scales it so that its longer side is `size` pixels, and encodes a JPEG.

    Grey images stay grey (one channel); everything else becomes RGB (alpha is dropped).

    Raises:
        BadImageError: when the file is not an image or cannot be fully decoded.
    """
    image = _open(data)
    width, height = image.size
    scale = size / max(width, height)
    target = (max(1, round(width * scale)), max(1, round(height * scale)))
    with _broken_data_is_bad_image():
        # JPEG draft mode decodes at 1/2, 1/4 or 1/8 scale in the DCT, several times faster
        # when shrinking a lot; it never goes below the requested size.
        image.draft("RGB", target)
        image.load()
        if image.mode not in ("RGB", "L"):
            image = image.convert("RGB")
        if image.size != target:
            image = image.resize(target, Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return StoredImage(data=buffer.getvalue(), height=target[1], width=target[0], format="JPEG")


def copy_shape(height: int, width: int, size: int) -> tuple[int, int]:
    """(height, width) of a copy whose shorter side is `size`, aspect kept (rounded)."""
    scale = size / min(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def make_copies(
    data: bytes, stored: StoredImage, sizes: Sequence[int], quality: int = 95
) -> list[tuple[int, bytes]]:
    """JPEG copies of an image whose shorter side is each of `sizes`, smallest first.

    Never upscaled: sizes not below the stored image's shorter side are left out (the stored
    image serves them). Only a JPEG stored image gets copies: the reader picks among JPEGs
    from their headers. The copies are made from `data` (the original file), decoded once at
    the coarsest DCT scale that still covers the largest copy.

    Raises:
        BadImageError: when the file cannot be fully decoded.
    """
    wanted = sorted(s for s in set(sizes) if s < min(stored.height, stored.width))
    if not wanted or stored.format != "JPEG":
        return []
    image = _open(data)
    width, height = image.size
    with _broken_data_is_bad_image():
        largest = copy_shape(height, width, wanted[-1])
        image.draft("RGB", (largest[1], largest[0]))
        image.load()
        if image.mode not in ("RGB", "L"):
            image = image.convert("RGB")
    copies = []
    for size in wanted:
        target_h, target_w = copy_shape(height, width, size)
        buffer = io.BytesIO()
        image.resize((target_w, target_h), Image.Resampling.BICUBIC).save(
            buffer, format="JPEG", quality=quality
        )
        copies.append((size, buffer.getvalue()))
    return copies
