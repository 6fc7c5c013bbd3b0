"""Training: strategy, precision, stages, the runner, checkpoints and run records."""

from kerastricks.train.runner import train

__all__ = ["train"]
