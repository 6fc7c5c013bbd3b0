"""Keras callbacks that work on any tf.keras model: LR finder, gradual unfreezing, momentum,
weight averaging (EMA, SWA)."""

from kerastricks.callbacks.averaging import (
    ModelEMA,
    StochasticWeightAveraging,
    enable_ema,
    update_bn,
)
from kerastricks.callbacks.lr_finder import LRFinder, find_lr
from kerastricks.callbacks.lr_suggestions import (
    get_suggestion,
    list_suggestions,
    minimum,
    slide,
    steep,
    suggest_lrs,
    valley,
)
from kerastricks.callbacks.momentum import MomentumScheduler
from kerastricks.callbacks.unfreeze import GradualUnfreeze

__all__ = [
    "GradualUnfreeze",
    "LRFinder",
    "ModelEMA",
    "MomentumScheduler",
    "StochasticWeightAveraging",
    "enable_ema",
    "find_lr",
    "get_suggestion",
    "list_suggestions",
    "minimum",
    "slide",
    "steep",
    "suggest_lrs",
    "update_bn",
    "valley",
]
