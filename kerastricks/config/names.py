"""The names a config may use for its string choices, without TensorFlow.

The config is checked before TensorFlow loads (a typo exits in a second, not after a fold has
trained), so the choices it checks live here; the modules that implement them import these
names rather than keep their own copies. Registries whose names come from TensorFlow code
(backbones, augmentations, optimizers, schedules) are checked by `kerastricks.train.preflight`.
"""

from __future__ import annotations

import difflib
import re

TTA_TRANSFORMS = ("identity", "hflip", "vflip", "rot90", "rot180", "rot270")
TTA_SCALE = re.compile(r"^scale(\d+(?:\.\d+)?)$")
POOLINGS = ("avg", "max", "avgmax")
REGRESSION_LOSSES = ("mse", "mae", "huber")
LOSSES = ("auto", "focal", *REGRESSION_LOSSES)
RESIZE_POLICIES = ("squash", "center_crop", "random_resized_crop")
# One default for `data.resize` and `build_dataset(resize=None)`: Python and YAML train alike.
DEFAULT_RESIZE = "squash"
STRATEGIES = ("auto", "tpu", "mirrored", "multi_worker", "default")
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
RECIPES = ("fine_tune", "progressive")
UNFREEZE = ("head", "all")
PREDICT_WEIGHTS = ("best", "last")
PREDICT_TARGETS = ("class_name", "index", "probabilities")
PSEUDO_MODES = ("per_fold", "pooled")
DATASETS = ("digits", "digits_semi")


def tta_scale_factor(name: str) -> float | None:
    """The zoom factor of a `scale<F>` TTA name (`scale1.15` -> 1.15); None for other names.

    Raises:
        ValueError: for `scale<F>` with F <= 0.
    """
    match = TTA_SCALE.match(name)
    if match is None:
        return None
    factor = float(match.group(1))
    if factor <= 0:
        raise ValueError(f"TTA transform {name!r}: the scale factor must be > 0")
    return factor


def check_tta_transform(name: str) -> None:
    """Raises a ValueError naming the closest names when `name` is no TTA transform: one of
    `TTA_TRANSFORMS` or `scale<F>` (`scale1.15` zooms in by 1.15, `scale0.9` out)."""
    if name in TTA_TRANSFORMS or tta_scale_factor(name) is not None:
        return
    close = difflib.get_close_matches(name, TTA_TRANSFORMS, n=3)
    raise ValueError(
        f"unknown TTA transform {name!r}; closest: {close or list(TTA_TRANSFORMS)}. "
        f"Known: {[*TTA_TRANSFORMS, 'scale<factor>']}"
    )
