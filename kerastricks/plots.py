"""Small matplotlib helpers that write PNGs: an LR schedule, an LR-finder sweep.

Figures are drawn with the Agg canvas on a `Figure` object (no pyplot state, no display
needed) and written through `tf.io.gfile` under a temporary name, then renamed, so that a
`gs://` run folder works and a crash never leaves half a PNG.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from kerastricks._fs import write_bytes_atomic


def _figure(title: str | None) -> tuple[Figure, Any]:
    figure = Figure(figsize=(6.4, 4.0), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    if title:
        axes.set_title(title)
    return figure, axes


def _save(figure: Figure, path: str) -> str:
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png")
    write_bytes_atomic(path, buffer.getvalue())
    return path


def schedule_values(
    schedule: tf.keras.optimizers.schedules.LearningRateSchedule | Callable[[Any], Any],
    total_steps: int,
) -> np.ndarray:
    """The values of a schedule (or any function of the step) at steps `0 .. total_steps-1`."""
    if total_steps <= 0:
        raise ValueError(f"schedule_values needs total_steps > 0. Received {total_steps}.")
    return schedule_values_at(schedule, np.arange(total_steps))


def schedule_values_at(
    schedule: tf.keras.optimizers.schedules.LearningRateSchedule | Callable[[Any], Any],
    steps: Sequence[int] | np.ndarray,
) -> np.ndarray:
    """The values of a schedule (or any function of the step) at the given steps.

    One vectorised call when the schedule takes a tensor of steps, else one call per step.
    """
    steps_array = np.asarray(steps, dtype=np.int64)
    try:
        values = np.asarray(schedule(tf.constant(steps_array, tf.int32)), dtype=np.float64)
    except (TypeError, ValueError, tf.errors.InvalidArgumentError):
        values = np.empty(0)
    if values.shape != steps_array.shape:
        # A schedule that only takes a scalar step (some Keras built-ins): one call per step.
        values = np.asarray([float(schedule(int(step))) for step in steps_array])
    return values


def plot_schedule(
    schedule: tf.keras.optimizers.schedules.LearningRateSchedule | Callable[[Any], Any],
    total_steps: int,
    path: str,
    title: str | None = None,
    ylabel: str = "learning rate",
) -> str:
    """Writes a PNG of `schedule` over `total_steps` optimizer steps; returns `path`.

    Example:
    ```python
    plot_schedule(OneCycle(1e-3, 1000), 1000, "runs/x/schedule.png")
    ```

    Args:
        schedule: a `LearningRateSchedule` or any function of the step.
        total_steps: number of steps to draw.
        path: PNG path (local or `gs://`).
        title: optional title; defaults to the schedule's class name.
        ylabel: y-axis label (e.g. "beta_1" for a momentum schedule).
    """
    values = schedule_values(schedule, total_steps)
    figure, axes = _figure(title or type(schedule).__name__)
    axes.plot(np.arange(total_steps), values)
    axes.set_xlabel("step")
    axes.set_ylabel(ylabel)
    axes.grid(alpha=0.3)
    return _save(figure, path)


def plot_lr_finder(
    lrs: Sequence[float],
    losses: Sequence[float],
    path: str,
    suggestions: Mapping[str, float] | None = None,
    title: str = "LR finder",
) -> str:
    """Writes a PNG of an LR-finder sweep (loss against log LR), suggestions marked; returns
    `path`.

    Args:
        lrs: the swept learning rates.
        losses: the smoothed losses, one per LR.
        path: PNG path (local or `gs://`).
        suggestions: `{name: lr}`; each is marked on the curve and named in the legend.
        title: figure title.
    """
    lrs_array = np.asarray(lrs, dtype=np.float64)
    losses_array = np.asarray(losses, dtype=np.float64)
    if lrs_array.shape != losses_array.shape or lrs_array.size == 0:
        raise ValueError(
            f"plot_lr_finder needs as many lrs as losses (at least one); received "
            f"{lrs_array.size} lrs and {losses_array.size} losses."
        )
    figure, axes = _figure(title)
    axes.plot(lrs_array, losses_array)
    axes.set_xscale("log")
    axes.set_xlabel("learning rate")
    axes.set_ylabel("smoothed loss")
    finite = np.isfinite(losses_array)
    for (name, lr), marker in zip((suggestions or {}).items(), "ov^sDP", strict=False):
        if not np.isfinite(lr) or not finite.any():
            continue
        loss = np.interp(np.log(lr), np.log(lrs_array[finite]), losses_array[finite])
        axes.plot([lr], [loss], marker=marker, linestyle="none", label=f"{name}: {lr:.2e}")
    if suggestions:
        axes.legend()
    axes.grid(alpha=0.3)
    return _save(figure, path)
