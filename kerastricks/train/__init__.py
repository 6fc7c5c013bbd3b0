"""Training: strategy, precision, stages, the runner, checkpoints and run records."""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["lr_find_for_config", "show_batch_for_config", "train"]

# name -> module; lazy, so that `kerastricks.train.stages` (pure planning) imports without
# the runner.
_EXPORTS = {
    "train": "kerastricks.train.runner",
    "show_batch_for_config": "kerastricks.train.show_batch",
    "lr_find_for_config": "kerastricks.train.lr_find",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'kerastricks.train' has no attribute {name!r}")
