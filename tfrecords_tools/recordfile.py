"""TFRecord files written from Python: the record framing, with the payload never copied.

A TFRecord file is a sequence of records, each framed as

    uint64 length | uint32 masked_crc32c(length) | payload | uint32 masked_crc32c(payload)

(little-endian; TensorFlow's `tsl/lib/io/record_writer.cc`). `tf.io.TFRecordWriter` takes
each record as one `bytes` object, so a record made of a small header and a large image
must first be joined (a copy), and its Python binding copies it once more: per photo, as
much as `cat` spends on the whole file. Here the header and the image are written
as they are and the CRC is extended over both with `google_crc32c` (hardware CRC32C).
`tfrecords-tools verify` and the tests read these files back through TensorFlow's reader,
which checks every CRC.
"""

from __future__ import annotations

import os
import struct
from types import TracebackType

import google_crc32c
import tensorflow as tf

_MASK_DELTA = 0xA282EAD8
_FLUSH_BYTES = 1 << 20
_FLUSH_PIECES = 768  # below the kernel's IOV_MAX (1024) pieces per writev


def masked_crc(crc: int) -> int:
    """TFRecord's masking of a CRC32C (rotate right by 15 bits, add a constant)."""
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


class RecordFile:
    """Appends TFRecord records to a new file (local, or any `tf.io.gfile` scheme).

    Example:
    ```python
    with RecordFile("shard.tfrec") as records:
        records.write(example_prefix(len(image), [3], "id-1", 0, "single_label"), image)
    ```
    """

    def __init__(self, path: str) -> None:
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        if "://" in path:
            self._file, self._fd = tf.io.gfile.GFile(path, "wb"), None
        else:
            # Local files: the records' pieces are gathered and handed to the kernel with one
            # `os.writev` per megabyte, so the images are never copied in Python.
            self._file, self._fd = None, os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)

    def write(self, head: bytes, body: bytes = b"") -> None:
        """Writes one record whose payload is `head + body` (e.g. an Example prefix, an image)."""
        length = struct.pack("<Q", len(head) + len(body))
        crc = google_crc32c.extend(google_crc32c.value(head), body)
        header = struct.pack("<I", masked_crc(google_crc32c.value(length)))
        self._pending += (length + header + head, body, struct.pack("<I", masked_crc(crc)))
        self._pending_bytes += len(head) + len(body) + 16
        if self._pending_bytes >= _FLUSH_BYTES or len(self._pending) >= _FLUSH_PIECES:
            self._flush()

    def _flush(self) -> None:
        pieces, self._pending, self._pending_bytes = self._pending, [], 0
        if self._fd is None:
            for piece in pieces:
                self._file.write(piece)
            return
        while pieces:
            written = os.writev(self._fd, pieces)
            # A partial write (a full disk, a signal) leaves the rest to write again.
            while pieces and written >= len(pieces[0]):
                written -= len(pieces[0])
                pieces.pop(0)
            if written:
                pieces[0] = pieces[0][written:]

    def close(self) -> None:
        """Writes what is pending and closes the file."""
        try:
            self._flush()
        finally:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            elif self._file is not None:
                self._file.close()
                self._file = None

    def __enter__(self) -> RecordFile:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()
