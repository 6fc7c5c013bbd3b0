"""File helpers over `tf.io.gfile`, so that `gs://` paths work, with atomic writes."""

from __future__ import annotations

import json
import os
import uuid
from typing import Any

import tensorflow as tf


def read_text(path: str) -> str:
    """Reads a text file (local, `gs://`, `ram://`); FileNotFoundError when it is missing."""
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(path)
    with tf.io.gfile.GFile(path, "r") as f:
        return f.read()


def write_bytes_atomic(path: str, data: bytes) -> None:
    """Writes a file under a temporary name, then renames it over `path`."""
    folder = os.path.dirname(path)
    if folder:
        tf.io.gfile.makedirs(folder)
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    with tf.io.gfile.GFile(tmp, "wb") as f:
        f.write(data)
    tf.io.gfile.rename(tmp, path, overwrite=True)


def write_text_atomic(path: str, text: str) -> None:
    """Writes a text file under a temporary name, then renames it over `path`."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str, data: Any) -> None:
    """Writes JSON (indented, sorted as given) atomically."""
    write_text_atomic(path, json.dumps(data, indent=2, default=_json_default) + "\n")


def read_json(path: str) -> Any:
    """Reads a JSON file through gfile."""
    return json.loads(read_text(path))


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)
