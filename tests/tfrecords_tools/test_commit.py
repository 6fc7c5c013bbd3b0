"""`kill -9` at any step of `write --overwrite` leaves the old dataset or the new one whole."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import traceback

import pytest
import tensorflow as tf

import tfrecords_tools.commit as commit_module
from tfrecords_tools import verify_records, write_records
from tfrecords_tools.manifest import read_manifest

OLD_COUNT, NEW_COUNT = 12, 20


def _killed_write_at(step: int, csv: str, out: str, exchange: bool) -> bool:
    """Runs an overwrite in a forked child that SIGKILLs itself before its `step`-th file system
    change (shard, folds.csv and manifest renames, the swap, the deletes); True if killed.

    A fork, not a new interpreter: TensorFlow is already imported (seconds per kill point), and
    the writer's own worker processes are forked the same way.
    """
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 3
        try:
            calls = [0]

            def counted(function):
                def call(*args, **kwargs):
                    calls[0] += 1
                    if calls[0] == step:
                        os.kill(os.getpid(), signal.SIGKILL)
                    return function(*args, **kwargs)

                return call

            for owner, name in [
                (os, "rename"),
                (tf.io.gfile, "rename"),
                (tf.io.gfile, "rmtree"),
                (tf.io.gfile, "remove"),
                (shutil, "rmtree"),
            ]:
                setattr(owner, name, counted(getattr(owner, name)))
            swap = commit_module.exchange if exchange else (lambda first, second: False)
            commit_module.exchange = counted(swap)
            write_records(out, csv=csv, overwrite=True, progress=False)
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        assert os.WTERMSIG(status) == signal.SIGKILL
        return True
    assert os.WEXITSTATUS(status) == 0, "the write failed in the child (see stderr)"
    return False


def _whole_datasets(root: str) -> list[int]:
    """Record counts of the datasets under `root` (out and hidden siblings) that verify."""
    counts = []
    for folder in sorted(glob.glob(os.path.join(root, "out")) + glob.glob(f"{root}/.out.*")):
        if os.path.exists(os.path.join(folder, "manifest.json")):
            report = verify_records(folder)
            if report["ok"] and report["num_records"] == read_manifest(folder)["num_records"]:
                counts.append(report["num_records"])
    return counts


@pytest.mark.parametrize("exchange", [True, False], ids=["exchange", "two-renames"])
def test_kill_at_every_step_of_an_overwrite_keeps_a_whole_dataset(make_digits, tmp_path, exchange):
    old_csv = make_digits(OLD_COUNT, folder="old")
    new_csv = make_digits(NEW_COUNT, folder="new")
    out = str(tmp_path / "data" / "out")
    write_records(out, csv=old_csv, folds=2, shard_mb=0.002, progress=False)
    step = 1
    while _killed_write_at(step, new_csv, out, exchange):
        root = str(tmp_path / "data")
        if exchange or os.path.exists(out):
            # `out` itself always holds a whole dataset, the old one or the new one.
            assert os.path.exists(os.path.join(out, "manifest.json")), f"step {step}"
            report = verify_records(out)
            assert report["ok"] and report["num_records"] in (OLD_COUNT, NEW_COUNT), step
        else:
            # Killed between the two renames: both whole datasets wait in hidden siblings.
            assert sorted(_whole_datasets(root)) == [OLD_COUNT, NEW_COUNT], f"step {step}"
        # At most the last kill's staging folder and a replaced dataset wait next to `out`.
        assert len(glob.glob(f"{root}/.out.*")) <= 2, f"step {step}"
        step += 1
    assert step > 6  # shards, folds.csv, manifest, the swap and the deletes were all hit
    assert verify_records(out)["num_records"] == NEW_COUNT
    assert os.listdir(tmp_path / "data") == ["out"]  # the last run cleared every leftover
