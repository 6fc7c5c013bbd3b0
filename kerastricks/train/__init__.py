"""Training: strategy, precision, stages, the runner, checkpoints and run records."""

from __future__ import annotations

from typing import Any

__all__ = ["train"]


def __getattr__(name: str) -> Any:
    # Lazy, so that `kerastricks.train.stages` (pure planning) imports without the runner.
    if name == "train":
        from kerastricks.train.runner import train

        return train
    raise AttributeError(f"module 'kerastricks.train' has no attribute {name!r}")
