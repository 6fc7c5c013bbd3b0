"""TFRecords to `tf.data`: reader (manifest, foreign keys), decode, augment, pipeline, show."""

from kerastricks.data.decode import RESIZE_POLICIES, decode_and_resize, decode_image
from kerastricks.data.pipeline import build_dataset
from kerastricks.data.reader import RecordSource, resolve_records
from kerastricks.data.show import save_batch_grid, show_batch

__all__ = [
    "RESIZE_POLICIES",
    "RecordSource",
    "build_dataset",
    "decode_and_resize",
    "decode_image",
    "resolve_records",
    "save_batch_grid",
    "show_batch",
]
