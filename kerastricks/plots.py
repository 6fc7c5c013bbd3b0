"""Small matplotlib helpers that write PNGs: an LR schedule, an LR-finder sweep, a run's
training curves across stages.

Figures are drawn with the Agg canvas on a `Figure` object (no pyplot state, no display
needed) and written through `tf.io.gfile` under a temporary name, then renamed, so that a
`gs://` run folder works and a crash never leaves half a PNG.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import tensorflow as tf
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from kerastricks._fs import write_bytes_atomic


def new_figure(width: float = 6.4, height: float = 4.0) -> Figure:
    """A bare `Figure` on its own Agg canvas: no pyplot state, the notebook's backend untouched
    (never `matplotlib.use`). Every PNG kerastricks draws starts here."""
    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def save_figure(figure: Figure, path: str) -> str:
    """Writes a figure as a PNG through `tf.io.gfile`, atomically; returns `path`."""
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png")
    write_bytes_atomic(path, buffer.getvalue())
    return path


def _figure(title: str | None) -> tuple[Figure, Any]:
    figure = new_figure()
    axes = figure.add_subplot(1, 1, 1)
    if title:
        axes.set_title(title)
    return figure, axes


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
    return save_figure(figure, path)


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
    return save_figure(figure, path)


# At most this many steps are evaluated for the LR panel: enough to draw every step of a
# Kaggle-sized run, few enough that a scalar-only schedule is evaluated in seconds.
MAX_LR_POINTS = 20_000


def stage_marks(rows: list[dict[str, Any]]) -> list[tuple[float, str]]:
    """Where each stage starts on the curves' epoch axis, with its label ("name, 32px").

    Epoch `e` (0-based in the history) is drawn at x = e + 1, so a stage whose first epoch
    is `e` starts at x = e + 0.5, between its first epoch and the previous stage's last.
    """
    marks: list[tuple[float, str]] = []
    previous = None
    for row in rows:
        stage = row.get("stage")
        if stage is None or stage == previous:
            continue
        previous = stage
        label = str(row.get("stage_name") or f"stage{int(stage) + 1}")
        if row.get("image_size") is not None:
            label += f", {int(row['image_size'])}px"
        marks.append((float(row["epoch"]) + 0.5, label))
    return marks


def lr_per_step(schedule: Any, plans: list[Any]) -> tuple[np.ndarray, np.ndarray]:
    """The schedule's LR at every optimizer step of the run, on the curves' epoch axis.

    Step `s` of a stage that starts at step `first_step` and epoch `first_epoch` is drawn
    at x = first_epoch + (s - first_step + 1) / steps_per_epoch, so an epoch's last step
    lands on that epoch's point (x = epoch + 1), where the history's end-of-epoch LR is.
    Runs longer than `MAX_LR_POINTS` steps are sampled evenly.

    Args:
        schedule: the run-wide schedule (a function of the global step).
        plans: the run's `StagePlan`s (first_step, first_epoch, steps_per_epoch,
            total_steps).

    Returns:
        (x, lr): two arrays of the same length.
    """
    total = plans[-1].first_step + plans[-1].total_steps
    if total <= MAX_LR_POINTS:
        steps = np.arange(total)
    else:
        steps = np.unique(np.linspace(0, total - 1, MAX_LR_POINTS).round().astype(np.int64))
    starts = np.array([plan.first_step for plan in plans])
    owner = np.searchsorted(starts, steps, side="right") - 1
    first_step = starts[owner]
    first_epoch = np.array([plan.first_epoch for plan in plans])[owner]
    per_epoch = np.array([plan.steps_per_epoch for plan in plans])[owner]
    x = first_epoch + (steps - first_step + 1) / per_epoch
    return x, schedule_values_at(schedule, steps)


def curves_figure(
    rows: list[dict[str, Any]],
    metric: str,
    schedule: Any = None,
    plans: list[Any] | None = None,
) -> Any:
    """A matplotlib Figure of loss, the metric and the LR across stages (None without rows).

    Each panel marks where a stage starts with a dashed line and the stage's name and image
    size. The LR panel draws the schedule at every step when `schedule` and `plans` are
    given, else the history's end-of-epoch LR.
    """
    frame = pd.DataFrame(rows)
    if frame.empty:
        return None
    epochs = frame["epoch"] + 1
    figure = new_figure(15, 4)
    axes = figure.subplots(1, 3)
    panels = [("loss", "loss"), (metric, metric)]
    for ax, (key, title) in zip(axes[:2], panels, strict=True):
        for column in (key, f"val_{key}"):
            if column in frame and frame[column].notna().any():
                ax.plot(epochs, frame[column], marker="o", label=column)
        ax.set_title(title)
    lr_axis = axes[2]
    if schedule is not None and plans:
        x, values = lr_per_step(schedule, plans)
        lr_axis.plot(x, values, label="lr per step")
        lr_axis.set_title("learning rate (head), per step")
    elif "lr" in frame:
        lr_axis.plot(epochs, frame["lr"], marker="o", label="lr at epoch end")
        lr_axis.set_title("learning rate (head)")
    marks = stage_marks(rows)
    for ax in axes:
        if marks:
            # The first stage's label sits at x = 0.5, left of the first epoch's point.
            ax.set_xlim(left=min(ax.get_xlim()[0], marks[0][0] - 0.1))
        _mark_stages(ax, marks)
        ax.set_xlabel("epoch")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="best")
    figure.tight_layout()
    return figure


def save_curves(
    rows: list[dict[str, Any]],
    metric: str,
    path: str,
    schedule: Any = None,
    plans: list[Any] | None = None,
) -> None:
    """Writes `curves_figure` as a PNG (nothing without rows); see `curves_figure`."""
    figure = curves_figure(rows, metric, schedule, plans)
    if figure is not None:
        save_figure(figure, path)


def save_lr_plot(schedule: Any, total_steps: int, boundaries: list[int], path: str) -> None:
    """Plots the run's LR schedule per step, stage boundaries marked."""
    steps = np.arange(max(total_steps, 1))
    figure, axes = _figure("LR schedule across stages")
    axes.plot(steps, schedule_values(schedule, len(steps)))
    for boundary in boundaries[1:]:
        axes.axvline(boundary, color="grey", linestyle="--", linewidth=0.8)
    axes.set_xlabel("step")
    axes.set_ylabel("learning rate (head)")
    save_figure(figure, path)


def _mark_stages(ax: Any, marks: list[tuple[float, str]]) -> None:
    # The text sits along the stage's line, at the top of the panel, in axes height units so
    # that it stays in view whatever the values' range.
    for number, (x, label) in enumerate(marks):
        if number > 0:
            ax.axvline(x, color="grey", linestyle="--", linewidth=0.8)
        ax.text(
            x,
            0.98,
            f" {label}",
            transform=ax.get_xaxis_transform(),
            rotation=90,
            ha="left",
            va="top",
            fontsize=7,
            color="dimgrey",
        )
