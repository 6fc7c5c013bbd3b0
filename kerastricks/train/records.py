"""What a run leaves behind: history.csv, summary.json and PNG plots."""

from __future__ import annotations

import io
import platform
from typing import Any

import numpy as np
import pandas as pd

from kerastricks._fs import write_bytes_atomic, write_text_atomic


def write_history(rows: list[dict[str, Any]], path: str) -> pd.DataFrame:
    """Writes one row per finished epoch, across all stages, atomically."""
    frame = pd.DataFrame(rows)
    write_text_atomic(path, frame.to_csv(index=False))
    return frame


def library_versions() -> dict[str, str]:
    """Versions of the libraries a run depends on, for summary.json."""
    import importlib.metadata as metadata

    versions = {"python": platform.python_version()}
    for package in ("tensorflow", "tf-keras", "keras", "tfimm", "kerastricks", "keras-cv"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def best_epoch(rows: list[dict[str, Any]], monitor: str, mode: str) -> dict[str, Any] | None:
    """The history row with the best monitored value (None when no row has it)."""
    scored = [r for r in rows if r.get(monitor) is not None and np.isfinite(r[monitor])]
    if not scored:
        return None
    pick = max if mode == "max" else min
    return pick(scored, key=lambda r: r[monitor])


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
    from kerastricks.plots import schedule_values_at

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
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    frame = pd.DataFrame(rows)
    if frame.empty:
        return None
    epochs = frame["epoch"] + 1
    figure = Figure(figsize=(15, 4), dpi=100)
    FigureCanvasAgg(figure)
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
    if figure is None:
        return
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    write_bytes_atomic(path, buffer.getvalue())


def save_lr_plot(schedule: Any, total_steps: int, boundaries: list[int], path: str) -> None:
    """Plots the run's LR schedule per step, stage boundaries marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from kerastricks.plots import schedule_values

    steps = np.arange(max(total_steps, 1))
    values = schedule_values(schedule, len(steps))
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, values)
    for boundary in boundaries[1:]:
        ax.axvline(boundary, color="grey", linestyle="--", linewidth=0.8)
    ax.set_xlabel("step")
    ax.set_ylabel("learning rate (head)")
    ax.set_title("LR schedule across stages")
    fig.tight_layout()
    save_figure(fig, path)


def save_figure(fig: Any, path: str) -> None:
    """Saves a matplotlib figure as PNG through gfile, atomically, and closes it."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    write_bytes_atomic(path, buffer.getvalue())


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


def prepare_run_dir(run_dir: str, overwrite: bool) -> None:
    """Creates a fresh run folder; an existing one is kept unless `overwrite`."""
    import tensorflow as tf

    if tf.io.gfile.exists(run_dir):
        if not overwrite:
            raise FileExistsError(
                f"run folder {run_dir} already exists. Continue it with --resume {run_dir}, "
                "replace it with --overwrite, or pick another name with --set name=..."
            )
        tf.io.gfile.rmtree(run_dir)
    tf.io.gfile.makedirs(run_dir)


def summarise_run(
    config: Any,
    inputs: Any,
    hardware: Any,
    plans: list[Any],
    state: dict[str, Any],
    monitor: tuple[str, str],
) -> dict[str, Any]:
    """The run's summary.json: best metric, its epoch and stage, per-stage wall time and
    images/s, hardware and library versions."""
    rows = state["rows"]
    name, mode = monitor
    best = best_epoch(rows, name, mode)
    stages = []
    for plan in plans:
        stage_rows = [r for r in rows if r["stage"] == plan.index]
        stage_best = best_epoch(stage_rows, name, mode)
        seconds = state["stage_times"].get(str(plan.index), 0.0)
        images = plan.steps_per_epoch * plan.update_batch * len(stage_rows)
        stages.append(
            {
                "name": plan.stage.name,
                "image_size": plan.stage.image_size,
                "epochs": plan.stage.epochs,
                "unfreeze": plan.stage.unfreeze,
                f"best_{name}": stage_best[name] if stage_best else None,
                "wall_s": round(seconds, 2),
                "img_per_s": round(images / seconds, 1) if seconds else None,
            }
        )
    summary: dict[str, Any] = {
        "name": config.name,
        # What inference needs without the training records (a Kaggle inference notebook
        # has the run folder and the test images only).
        "task": inputs.source.task,
        "num_classes": inputs.source.num_classes,
        "class_names": list(inputs.source.class_names),
        "image_size": plans[-1].stage.image_size,
        "monitor": name,
        "best": best[name] if best else None,
        "best_epoch": best["epoch"] if best else None,
        "best_stage": best["stage_name"] if best else None,
        "epochs": len(rows),
        "stages": stages,
        "wall_s": round(sum(state["stage_times"].values()), 2),
        "hardware": {
            "strategy": hardware.name,
            "device": hardware.kind,
            "replicas": hardware.replicas,
        },
        "num_train": inputs.num_train,
        "num_val": inputs.num_val,
        "versions": library_versions(),
    }
    if name == "val_accuracy":
        summary["val_accuracy"] = summary["best"]
    return summary


def print_stage_table(summary: dict[str, Any]) -> None:
    """Prints the best metric, wall time and images/s of every stage."""
    key = f"best_{summary['monitor']}"
    print(f"\n{'stage':<12} {'size':>5} {'epochs':>6} {key:>20} {'wall s':>8} {'img/s':>8}")
    for stage in summary["stages"]:
        value = stage[key]
        shown = f"{value:.4f}" if value is not None else "-"
        print(
            f"{stage['name']:<12} {stage['image_size']:>5} {stage['epochs']:>6} {shown:>20} "
            f"{stage['wall_s']:>8.1f} {stage['img_per_s'] or 0:>8.1f}"
        )
