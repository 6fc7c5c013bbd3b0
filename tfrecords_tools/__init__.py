"""Sharded TFRecords with folds and a manifest, from a CSV or a folder tree of images.

Independent of kerastricks (it runs on a machine that only prepares data); TensorFlow and
Pillow only.
"""

from __future__ import annotations

import importlib
from typing import Any

# Public names and their modules. They are imported on first use (PEP 562), so that
# `tfrecords-tools --help` and argument errors answer without importing TensorFlow,
# scikit-learn and pandas (12-14 s on a cold Kaggle or Colab machine).
_EXPORTS = {
    "FORMAT_VERSION": "tfrecords_tools.schema",
    "TFRecordsError": "tfrecords_tools.schema",
    "assign_folds": "tfrecords_tools.folds",
    "inspect_records": "tfrecords_tools.inspect",
    "verify_records": "tfrecords_tools.inspect",
    "write_records": "tfrecords_tools.write",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'tfrecords_tools' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
