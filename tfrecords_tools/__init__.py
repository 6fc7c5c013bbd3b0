"""Sharded TFRecords with folds and a manifest, from a CSV or a folder tree of images.

Independent of kerastricks (it runs on a machine that only prepares data); TensorFlow and
Pillow only.
"""

from tfrecords_tools.folds import assign_folds
from tfrecords_tools.inspect import inspect_records, verify_records
from tfrecords_tools.schema import FORMAT_VERSION, TFRecordsError
from tfrecords_tools.write import write_records

__all__ = [
    "FORMAT_VERSION",
    "TFRecordsError",
    "assign_folds",
    "inspect_records",
    "verify_records",
    "write_records",
]
