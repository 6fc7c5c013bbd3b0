"""Smith's cyclical learning rate, with tensorflow-addons' arguments."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import tensorflow as tf

from kerastricks.schedules.annealing import cyclical_value

_register = tf.keras.saving.register_keras_serializable(package="kerastricks")
_Schedule = tf.keras.optimizers.schedules.LearningRateSchedule


from kerastricks.schedules.piecewise import _positive, _step


def _scale_triangular(x: Any) -> Any:
    return 1.0 + 0.0 * x


def _scale_triangular2(x: Any) -> Any:
    return 1.0 / 2.0 ** (x - 1.0)


_CYCLICAL_MODES = ("triangular", "triangular2", "exp_range")


@_register
class Cyclical(_Schedule):
    """Smith's cyclical LR, with tensorflow-addons `CyclicalLearningRate`'s arguments.

    The LR moves between `initial_learning_rate` and `maximal_learning_rate` in triangles of
    `2 * step_size` steps, scaled per cycle (`triangular2`: amplitude halves each cycle) or per
    step (`exp_range`: `gamma ** step`). A notebook that used
    `tfa.optimizers.CyclicalLearningRate(...)` moves over by changing the import (tensorflow-addons
    does not import on TF >= 2.16).

    Example:
    ```python
    schedule = Cyclical(1e-4, 1e-2, step_size=2 * steps_per_epoch, mode="triangular2")
    optimizer = tf.keras.optimizers.SGD(learning_rate=schedule, momentum=0.9)
    ```

    Args:
        initial_learning_rate: lower bound of the cycle.
        maximal_learning_rate: upper bound of the cycle.
        step_size: steps in half a cycle.
        mode: `"triangular"`, `"triangular2"` or `"exp_range"`; ignored when `scale_fn` is given.
        gamma: base of `exp_range`'s per-step scale.
        scale_fn: custom amplitude scale, a function of the cycle number (or the step, with
            `scale_mode="iterations"`); register it with
            `tf.keras.saving.register_keras_serializable` to save the schedule.
        scale_mode: `"cycle"` or `"iterations"`; `None` picks `"iterations"` for `exp_range` and
            `"cycle"` otherwise (as tensorflow-addons' subclasses and PyTorch `CyclicLR`).
        name: optional name for the ops.
    """

    def __init__(
        self,
        initial_learning_rate: float,
        maximal_learning_rate: float,
        step_size: float,
        mode: str = "triangular",
        gamma: float = 1.0,
        scale_fn: Callable[[Any], Any] | None = None,
        scale_mode: str | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__()
        _positive("Cyclical", step_size=step_size)
        if scale_fn is None and mode not in _CYCLICAL_MODES:
            raise ValueError(f"Cyclical needs mode in {_CYCLICAL_MODES}. Received mode={mode!r}.")
        if scale_mode not in (None, "cycle", "iterations"):
            raise ValueError(
                f"Cyclical needs scale_mode 'cycle' or 'iterations'. Received {scale_mode!r}."
            )
        self.initial_learning_rate = float(initial_learning_rate)
        self.maximal_learning_rate = float(maximal_learning_rate)
        self.step_size = float(step_size)
        self.mode = mode
        self.gamma = float(gamma)
        self.scale_fn = scale_fn
        default_mode = "iterations" if mode == "exp_range" and scale_fn is None else "cycle"
        self.scale_mode = scale_mode or default_mode
        self.name = name

    def _scale_fn(self) -> Callable[[Any], Any]:
        if self.scale_fn is not None:
            return self.scale_fn
        if self.mode == "exp_range":
            return lambda x: self.gamma**x
        return _scale_triangular2 if self.mode == "triangular2" else _scale_triangular

    def value_at(self, step: Any) -> Any:
        """The schedule at `step` (float, numpy array or tensor)."""
        return cyclical_value(
            step,
            self.initial_learning_rate,
            self.maximal_learning_rate,
            self.step_size,
            self._scale_fn(),
            self.scale_mode,
        )

    def __call__(self, step: Any) -> tf.Tensor:
        with tf.name_scope(self.name or "Cyclical"):
            return self.value_at(_step(step))

    def get_config(self) -> dict[str, Any]:
        scale_fn = self.scale_fn
        if scale_fn is not None:
            scale_fn = tf.keras.saving.serialize_keras_object(scale_fn)
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "maximal_learning_rate": self.maximal_learning_rate,
            "step_size": self.step_size,
            "mode": self.mode,
            "gamma": self.gamma,
            "scale_fn": scale_fn,
            "scale_mode": self.scale_mode,
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Cyclical:
        config = dict(config)
        if config.get("scale_fn") is not None:
            config["scale_fn"] = tf.keras.saving.deserialize_keras_object(config["scale_fn"])
        return cls(**config)
