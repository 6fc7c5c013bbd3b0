"""Trains (or resumes) a run in a fresh process and records what resume exactness compares
(tests/train/test_resume.py).

Usage: python _resume_worker.py CONFIG.yaml OUT.npz [RUN_DIR to resume]

Every optimizer step appends `step lr multipliers...` (the ones the step applied) to
`OUT.npz.lr.txt`, so a killed run and its resume write one log. With the environment variable
`KERASTRICKS_TEST_KILL_AFTER_EPOCH=N` the process sends itself SIGKILL right after epoch N's
checkpoint and `state.json` are written: a kill -9 at a chosen point, not at a time. A run
that finishes saves its weights, optimizer variables and step counter to OUT.npz.
"""

import os
import signal
import sys

import numpy as np

import kerastricks  # noqa: F401
from kerastricks.optim import get_lr_multipliers
from kerastricks.train import epoch_callbacks

KILL_AFTER = "KERASTRICKS_TEST_KILL_AFTER_EPOCH"


def install_test_hooks(lr_log: str) -> None:
    recorder = epoch_callbacks.EpochRecorder
    on_epoch_end = recorder.on_epoch_end
    kill_after = int(os.environ.get(KILL_AFTER, "0"))

    def on_train_batch_end(self, batch, logs=None):
        # The optimizer's `learning_rate` is its schedule at the step it has just applied.
        step = int(self.optimizer.iterations.numpy()) - 1
        values = [float(self.optimizer.learning_rate), *get_lr_multipliers(self.optimizer)]
        with open(lr_log, "a") as f:
            f.write(" ".join([str(step), *(repr(v) for v in values)]) + "\n")

    def on_epoch_end_then_kill(self, epoch, logs=None):
        on_epoch_end(self, epoch, logs)
        if len(self.state["rows"]) == kill_after:
            os.kill(os.getpid(), signal.SIGKILL)

    recorder.on_train_batch_end = on_train_batch_end
    recorder.on_epoch_end = on_epoch_end_then_kill


def main() -> None:
    config_path, out = sys.argv[1:3]
    resume = sys.argv[3] if len(sys.argv) > 3 else None
    install_test_hooks(out + ".lr.txt")
    from kerastricks.config import load_config
    from kerastricks.train import train

    result = train(load_config(config_path), resume=resume)
    optimizer = result.model.optimizer
    arrays = {f"weight/{i}/{v.name}": v.numpy() for i, v in enumerate(result.model.weights)}
    arrays.update({f"optimizer/{i}/{v.name}": v.numpy() for i, v in enumerate(optimizer.variables)})
    arrays["steps"] = np.array(result.summary["steps"])
    np.savez(out, **arrays)


if __name__ == "__main__":
    main()
