"""What a run leaves behind: history.csv, summary.json and PNG plots."""

from __future__ import annotations

import platform
from typing import Any

import numpy as np
import pandas as pd

from kerastricks._fs import write_text_atomic


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
                "stored_sizes": stage_rows[0].get("stored_sizes") if stage_rows else None,
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
    print(
        f"\n{'stage':<12} {'size':>5} {'epochs':>6} {key:>20} {'wall s':>8} {'img/s':>8}  read from"
    )
    for stage in summary["stages"]:
        value = stage[key]
        shown = f"{value:.4f}" if value is not None else "-"
        print(
            f"{stage['name']:<12} {stage['image_size']:>5} {stage['epochs']:>6} {shown:>20} "
            f"{stage['wall_s']:>8.1f} {stage['img_per_s'] or 0:>8.1f}  "
            f"{stage.get('stored_sizes') or '-'}"
        )
