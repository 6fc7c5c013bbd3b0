"""Keras callbacks that work on any tf.keras model: LR finder, gradual unfreezing, momentum."""

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
    "MomentumScheduler",
    "find_lr",
    "get_suggestion",
    "list_suggestions",
    "minimum",
    "slide",
    "steep",
    "suggest_lrs",
    "valley",
]
