"""Per-epoch callbacks of the stage runner: history rows, best weights, checkpoints, NaN stop."""

from __future__ import annotations

import math
import os
import time
from typing import Any

import tensorflow as tf

from kerastricks.train.checkpoints import RunCheckpoint
from kerastricks.train.reports import write_history
from kerastricks.train.stages import StagePlan


class EpochRecorder(tf.keras.callbacks.Callback):
    """Appends one history row per epoch, keeps the best weights and checkpoints the run
    (with no `checkpoint`, it only records: nothing is written)."""

    def __init__(
        self,
        optimizer: Any,
        schedule: Any,
        plan: StagePlan,
        state: dict[str, Any],
        checkpoint: RunCheckpoint | None,
        monitor: tuple[str, str],
        averaging: Any = None,
        fields: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.fields = dict(fields or {})
        self.averaging = averaging
        self.optimizer = optimizer
        self.schedule = schedule
        self.plan = plan
        self.state = state
        self.checkpoint = checkpoint
        self.monitor, self.mode = monitor
        self._start = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        seconds = time.perf_counter() - self._start
        step = int(self.optimizer.iterations.numpy())
        row = {
            "epoch": epoch,
            "stage": self.plan.index,
            "stage_name": self.plan.stage.name,
            "image_size": self.plan.stage.image_size,
            **self.fields,
            "lr": float(self.schedule(max(step - 1, 0))),
            **{k: float(v) for k, v in (logs or {}).items()},
            "time_s": round(seconds, 3),
            "img_per_s": round(self.plan.steps_per_epoch * self.plan.update_batch / seconds, 1),
        }
        self.state["rows"].append(row)
        times = self.state["stage_times"]
        times[str(self.plan.index)] = times.get(str(self.plan.index), 0.0) + seconds
        value = row.get(self.monitor)
        best = self.state["best"]
        if value is not None and math.isfinite(value) and _improves(value, best, self.mode):
            self.state["best"] = value
            self._save_best()
        if self.checkpoint is None:
            return
        self.checkpoint.save(self.state)
        write_history(self.state["rows"], os.path.join(self.checkpoint.folder, "..", "history.csv"))

    def _save_best(self) -> None:
        if self.checkpoint is None:
            return
        if self.averaging is None:
            self.checkpoint.save_best()
            return
        with self.averaging.averaged_weights():
            self.checkpoint.save_best()


def _improves(value: float, best: float | None, mode: str) -> bool:
    if best is None:
        return True
    return value > best if mode == "max" else value < best


class NaNGuard(tf.keras.callbacks.Callback):
    """Stops the run on a NaN or infinite loss, naming the stage and the step."""

    def __init__(self, stage_name: str, plan: StagePlan) -> None:
        super().__init__()
        self.stage_name = stage_name
        self.plan = plan

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            step = int(self.model.optimizer.iterations.numpy())
            raise FloatingPointError(
                f"loss is {loss} in stage '{self.stage_name}' at step {step} (batch {batch} of "
                "the epoch). Lower the stage's lr, check the labels, or use precision: float32."
            )
