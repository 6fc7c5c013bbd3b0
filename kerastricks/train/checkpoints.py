"""Checkpoints that survive a kill -9: model + optimizer state after every epoch, and the best
weights by the validation metric.

The order of writes makes every moment safe to die in: the TF checkpoint is written first
(CheckpointManager keeps the previous one and updates its index atomically), then
`state.json` (temp + rename) names the checkpoint and the finished history rows. A run killed
between the two resumes from the previous epoch and redoes the lost one.
"""

from __future__ import annotations

import os
from typing import Any

import tensorflow as tf

from kerastricks._fs import read_json, write_json_atomic

STATE_FILE = "state.json"


class RunCheckpoint:
    """Saves and restores a run's progress: weights, optimizer state, finished epochs.

    Args:
        run_dir: the run folder; files go to `<run_dir>/checkpoints/`.
        model: the model whose weights are saved.
        optimizer: the optimizer whose state (slots, iterations, LR multipliers) is saved.
        max_to_keep: how many per-epoch checkpoints to keep (at least 2: see module docs).
        extra: more trackable state to save with them (e.g. SWA's running average).
    """

    def __init__(
        self,
        run_dir: str,
        model: tf.keras.Model,
        optimizer: Any,
        max_to_keep: int = 2,
        extra: dict[str, Any] | None = None,
    ) -> None:
        self.folder = os.path.join(run_dir, "checkpoints")
        self._max_to_keep = max(2, max_to_keep)
        self._extra = extra or {}
        self._state_path = os.path.join(self.folder, STATE_FILE)
        self.rebind(model, optimizer)

    def rebind(self, model: tf.keras.Model, optimizer: Any) -> None:
        """Saves `model` and `optimizer` from now on (a fixed-size backbone rebuilt at a new
        image size is a new model)."""
        self.model = model
        self._checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, **self._extra)
        self._manager = tf.train.CheckpointManager(
            self._checkpoint, os.path.join(self.folder, "last"), max_to_keep=self._max_to_keep
        )

    @staticmethod
    def peek(run_dir: str) -> dict[str, Any] | None:
        """The saved state of a run folder without restoring anything (None if fresh)."""
        path = os.path.join(run_dir, "checkpoints", STATE_FILE)
        return read_json(path) if tf.io.gfile.exists(path) else None

    def save(self, state: dict[str, Any]) -> None:
        """Writes the checkpoint, then `state.json` pointing at it."""
        # Numbered by finished epochs: a rebound manager never reuses a name.
        path = self._manager.save(checkpoint_number=len(state.get("rows", [])))
        write_json_atomic(self._state_path, {**state, "checkpoint": path})

    def restore(self, run_dir: str | None = None) -> dict[str, Any] | None:
        """Restores the checkpoint named by `state.json` (of `run_dir`, default this run's);
        returns the state, None if fresh."""
        state = self.peek(run_dir) if run_dir is not None else None
        if run_dir is None and tf.io.gfile.exists(self._state_path):
            state = read_json(self._state_path)
        if state is None:
            return None
        status = self._checkpoint.read(state["checkpoint"])
        status.assert_existing_objects_matched()
        return state

    def save_best(self) -> str:
        """Saves the current weights as the best ones (HDF5, temp name then rename)."""
        path = os.path.join(self.folder, "best.weights.h5")
        tmp = os.path.join(self.folder, "best.tmp.weights.h5")
        tf.io.gfile.makedirs(self.folder)
        self.model.save_weights(tmp)
        tf.io.gfile.rename(tmp, path, overwrite=True)
        return path

    def export_last(self) -> str:
        """Saves the final weights as `last.weights.h5` for prediction."""
        path = os.path.join(self.folder, "last.weights.h5")
        tmp = os.path.join(self.folder, "last.tmp.weights.h5")
        self.model.save_weights(tmp)
        tf.io.gfile.rename(tmp, path, overwrite=True)
        return path
