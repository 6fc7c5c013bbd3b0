"""`LRFinder`: fastai's `lr_find` as a Keras callback, and `find_lr` to run it."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from kerastricks.callbacks._optimizer import build_optimizer, learning_rate_is_settable
from kerastricks.callbacks.lr_suggestions import get_suggestion, suggest_lrs
from kerastricks.optim.inner import innermost_optimizer


class LRFinder(tf.keras.callbacks.Callback):
    """Sweeps the learning rate exponentially, one batch per LR, and records the smoothed loss.

    fastai's `lr_find` (Smith's LR range test) for any compiled tf.keras model. The LR goes
    from `start_lr` to `end_lr` over `num_it` batches; the loss is a debiased moving average;
    the sweep stops once that loss exceeds 4x its best. The model's weights and the
    optimizer's state (slots, iterations, LR) are put back at the end of training, so the
    sweep leaves no trace. Suggestions are computed as fastai does (trimmed curve, functions
    of `(lrs, losses)` picked by name: valley, slide, minimum, steep).

    Example:
    ```python
    model.compile(optimizer=tf.keras.optimizers.AdamW(1e-3), loss="categorical_crossentropy")
    finder = LRFinder(suggest=["valley", "steep"])
    model.fit(dataset.repeat(), epochs=1, steps_per_epoch=100, callbacks=[finder])
    finder.plot("lr_find.png")
    lr = finder.suggestion  # the first (valley) suggestion
    ```

    Args:
        start_lr: first learning rate of the sweep (fastai: 1e-7).
        end_lr: the learning rate that batch `num_it` would get (fastai: 10).
        num_it: number of batches in the sweep; training is stopped after it.
        stop_div: stop as soon as the smoothed loss exceeds 4x the best one (or is not finite).
        smooth_beta: weight of the past in the loss moving average (fastai: 0.98).
        suggest: name of a suggestion, or several (the first is `suggestion`).
    """

    def __init__(
        self,
        start_lr: float = 1e-7,
        end_lr: float = 10.0,
        num_it: int = 100,
        stop_div: bool = True,
        smooth_beta: float = 0.98,
        suggest: str | Sequence[str] = "valley",
    ) -> None:
        super().__init__()
        if not 0 < start_lr < end_lr:
            raise ValueError(
                f"LRFinder needs 0 < start_lr < end_lr. Received start_lr={start_lr}, "
                f"end_lr={end_lr}."
            )
        if num_it < 2:
            raise ValueError(f"LRFinder needs num_it >= 2. Received num_it={num_it}.")
        if not 0 <= smooth_beta < 1:
            raise ValueError(f"LRFinder needs 0 <= smooth_beta < 1. Received {smooth_beta}.")
        self.suggest_names = [suggest] if isinstance(suggest, str) else list(suggest)
        for name in self.suggest_names:
            get_suggestion(name)
        self.start_lr = float(start_lr)
        self.end_lr = float(end_lr)
        self.num_it = int(num_it)
        self.stop_div = bool(stop_div)
        self.smooth_beta = float(smooth_beta)
        self.lrs: list[float] = []
        self.losses: list[float] = []
        self.suggestions: dict[str, float] = {}

    @property
    def suggestion(self) -> float:
        """The first requested suggestion (NaN before a sweep, or when the sweep was too short)."""
        return self.suggestions.get(self.suggest_names[0], float("nan"))

    def lr_at(self, iteration: int) -> float:
        """The LR of batch `iteration` of the sweep (fastai: exponential in iteration/num_it)."""
        return self.start_lr * (self.end_lr / self.start_lr) ** (iteration / self.num_it)

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        optimizer = self.model.optimizer
        if optimizer is None:
            raise ValueError("LRFinder needs a compiled model; call model.compile(...) first.")
        if not learning_rate_is_settable(optimizer):
            raise ValueError(
                "LRFinder sets the learning rate each batch, but this optimizer was created "
                "with a LearningRateSchedule. Compile a copy of the model with a float "
                "learning rate for the sweep, e.g. tf.keras.optimizers.AdamW(1e-3)."
            )
        # Slots made now (zeros, as a fresh optimizer would make them) are part of the snapshot,
        # so the sweep's momentum does not leak into the real training.
        build_optimizer(optimizer, self.model.trainable_variables)
        self._weights = [v.numpy() for v in self.model.weights]
        self._optimizer_state = [v.numpy() for v in optimizer.variables]
        self._initial_lr = float(innermost_optimizer(optimizer).learning_rate.numpy())
        self.lrs, self.losses, self.suggestions = [], [], {}
        self._average, self._best = 0.0, math.inf

    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        innermost_optimizer(self.model.optimizer).learning_rate = self.lr_at(len(self.lrs))
        # Keras logs the epoch's running mean of the loss; resetting it makes the logged loss
        # this batch's own, which is what fastai smooths.
        self.model.reset_metrics()

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        loss = float((logs or {}).get("loss", math.nan))
        self._average = self.smooth_beta * self._average + (1.0 - self.smooth_beta) * loss
        smoothed = self._average / (1.0 - self.smooth_beta ** (len(self.lrs) + 1))
        self.lrs.append(self.lr_at(len(self.lrs)))
        self.losses.append(smoothed)
        self._best = min(self._best, smoothed)
        diverged = not math.isfinite(smoothed) or smoothed > 4.0 * self._best
        if len(self.lrs) >= self.num_it or (self.stop_div and diverged):
            self.model.stop_training = True

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        for variable, value in zip(self.model.weights, self._weights, strict=True):
            variable.assign(value)
        optimizer = self.model.optimizer
        for variable, value in zip(optimizer.variables, self._optimizer_state, strict=True):
            variable.assign(value)
        innermost_optimizer(optimizer).learning_rate = self._initial_lr
        self.suggestions = suggest_lrs(self.lrs, self.losses, self.suggest_names, self.num_it)

    def plot(self, path: str, title: str = "LR finder") -> str:
        """Writes a PNG of the sweep with the suggestions marked; returns `path`."""
        from kerastricks.plots import plot_lr_finder

        if not self.lrs:
            raise ValueError("LRFinder.plot needs a sweep first: run model.fit with the finder.")
        return plot_lr_finder(self.lrs, self.losses, path, self.suggestions, title)


def find_lr(
    model: tf.keras.Model,
    dataset: tf.data.Dataset,
    steps: int = 100,
    verbose: int = 0,
    **kwargs: Any,
) -> LRFinder:
    """Runs an LR sweep of `steps` batches on a compiled model and returns the `LRFinder`.

    The dataset is repeated so that a short one still gives `steps` batches; weights and
    optimizer state are restored afterwards.

    Example:
    ```python
    finder = find_lr(model, train_ds, steps=100, suggest=["valley", "minimum"])
    print(finder.suggestions)  # {"valley": 2.1e-3, "minimum": 5.2e-3}
    ```

    Args:
        model: a compiled tf.keras model whose optimizer has a float learning rate.
        dataset: a `tf.data.Dataset` of training batches, as for `model.fit`.
        steps: batches in the sweep (`num_it`).
        verbose: passed to `model.fit`.
        **kwargs: other `LRFinder` arguments (start_lr, end_lr, stop_div, smooth_beta, suggest).
    """
    if model.optimizer is None:
        raise ValueError("find_lr needs a compiled model; call model.compile(...) first.")
    finder = LRFinder(num_it=steps, **kwargs)
    model.fit(
        dataset.repeat(), epochs=1, steps_per_epoch=steps, callbacks=[finder], verbose=verbose
    )
    if not np.isfinite(finder.suggestion):
        tf.get_logger().warning(
            "find_lr: the sweep stopped after %d of %d batches, too few for a suggestion; "
            "lower start_lr or raise steps.",
            len(finder.lrs),
            steps,
        )
    return finder
