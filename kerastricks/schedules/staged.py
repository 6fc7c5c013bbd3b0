"""`Constant` and `Staged`: one schedule per training stage, resumable from the step."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import tensorflow as tf

_register = tf.keras.saving.register_keras_serializable(package="kerastricks")
_Schedule = tf.keras.optimizers.schedules.LearningRateSchedule


@_register
class Constant(_Schedule):
    """A constant learning rate as a serialisable schedule (for `Staged` and the registry).

    Example:
    ```python
    schedule = Staged([100], [Constant(1e-3), OneCycle(1e-3, total_steps=900)])
    ```

    Args:
        lr: the learning rate.
        name: optional name for the ops.
    """

    def __init__(self, lr: float, name: str | None = None) -> None:
        super().__init__()
        self.lr = float(lr)
        self.name = name

    def __call__(self, step: Any) -> tf.Tensor:
        return tf.fill(tf.shape(step), tf.constant(self.lr, tf.float32))

    def get_config(self) -> dict[str, Any]:
        return {"lr": self.lr, "name": self.name}


@_register
class Staged(_Schedule):
    """One schedule per training stage, stepped with the global step re-based to the stage start.

    Stage i runs `schedules[i]` for global steps in `[boundaries[i-1], boundaries[i])` with
    step `global_step - boundaries[i-1]`; the last stage runs to the end. A multi-stage run
    (fine-tuning, progressive resizing) keeps ONE schedule on the optimizer, so resuming after
    a crash restores the LR from `optimizer.iterations` alone.

    Example:
    ```python
    frozen, unfrozen = 1 * steps_per_epoch, 4 * steps_per_epoch
    schedule = Staged(
        [frozen],
        [OneCycle(2e-3, frozen, pct_start=0.99), OneCycle(1e-3, unfrozen, div_factor=5.0)],
    )
    ```

    Args:
        boundaries: increasing global steps where a new stage starts (`len(schedules) - 1`).
        schedules: `LearningRateSchedule`s (or floats, made `Constant`).
        name: optional name for the ops.
    """

    def __init__(
        self,
        boundaries: Sequence[int],
        schedules: Sequence[_Schedule | float],
        name: str | None = None,
    ) -> None:
        super().__init__()
        self.boundaries = [int(b) for b in boundaries]
        self.schedules = [s if isinstance(s, _Schedule) else Constant(s) for s in schedules]
        self.name = name
        if len(self.boundaries) != len(self.schedules) - 1:
            raise ValueError(
                f"Staged needs one boundary fewer than schedules; received "
                f"{len(self.boundaries)} boundaries for {len(self.schedules)} schedules."
            )
        previous = [0, *self.boundaries[:-1]][: len(self.boundaries)]
        if any(b <= a for a, b in zip(previous, self.boundaries, strict=True)):
            raise ValueError(
                f"Staged needs boundaries > 0 in increasing order. Received {self.boundaries}."
            )

    def __call__(self, step: Any) -> tf.Tensor:
        with tf.name_scope(self.name or "Staged"):
            step = tf.convert_to_tensor(step)
            starts = [0, *self.boundaries]
            # Every stage is evaluated and one is selected with tf.where: no python branch on
            # the step tensor, so the schedule compiles with XLA.
            value = self._stage_value(step, starts[-1], self.schedules[-1])
            for start, end, schedule in reversed(
                list(zip(starts[:-1], self.boundaries, self.schedules[:-1], strict=True))
            ):
                value = tf.where(step < end, self._stage_value(step, start, schedule), value)
            return value

    @staticmethod
    def _stage_value(step: tf.Tensor, start: int, schedule: _Schedule) -> tf.Tensor:
        local = tf.maximum(step - tf.cast(start, step.dtype), tf.zeros_like(step))
        return tf.cast(schedule(local), tf.float32)

    def get_config(self) -> dict[str, Any]:
        serialize = tf.keras.optimizers.schedules.serialize
        return {
            "boundaries": self.boundaries,
            "schedules": [serialize(s) for s in self.schedules],
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Staged:
        config = dict(config)
        deserialize = tf.keras.optimizers.schedules.deserialize
        config["schedules"] = [deserialize(s) for s in config["schedules"]]
        return cls(**config)
