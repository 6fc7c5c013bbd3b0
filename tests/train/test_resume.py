"""kill -9 in the middle of a run, then --resume: the run ends exactly where an uninterrupted
one does (weights, optimizer slots, step counter, the LR of every step)."""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml

import kerastricks  # noqa: F401
from kerastricks.config import save_config

STAGES = [
    {"name": "a", "epochs": 2, "image_size": 16, "unfreeze": "head", "lr": 3e-3},
    {"name": "b", "epochs": 2, "image_size": 24, "unfreeze": "all", "lr": 1e-3},
]
WORKER = os.path.join(os.path.dirname(__file__), "_resume_worker.py")
STEPS_PER_EPOCH = 2


def run_worker(config_path, out, resume=None, kill_after=None):
    env = dict(os.environ)
    env.pop("KERASTRICKS_TEST_KILL_AFTER_EPOCH", None)
    if kill_after is not None:
        env["KERASTRICKS_TEST_KILL_AFTER_EPOCH"] = str(kill_after)
    command = [sys.executable, WORKER, config_path, out, *([resume] if resume else [])]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=400)


def deterministic_run(make_config, tmp_path, name):
    config = make_config(
        name=name,
        data={"deterministic": True},
        train={"stages": STAGES, "steps_per_epoch": STEPS_PER_EPOCH, "batch_size": 8},
    )
    path = str(tmp_path / f"{name}.yaml")
    save_config(config, path)
    return path, os.path.join(config.output, name), str(tmp_path / f"{name}.npz")


def lr_log(out):
    """[(step, lr, multipliers...)] of every optimizer step, the killed run's included."""
    return [tuple(float(x) for x in line.split()) for line in open(out + ".lr.txt")]


def assert_same_state(resumed, reference, label):
    """Weights (BatchNorm statistics included), optimizer variables and step counter."""
    names = [n for n in reference.files if n.startswith(("weight/", "optimizer/"))]
    assert sorted(resumed.files) == sorted(reference.files), label
    slots = [n for n in names if n.split("/")[2] in ("m", "v")]
    assert len(slots) > 100, "AdamW's two slots of each of resnet18's weights are compared"
    for name in names:
        np.testing.assert_allclose(
            resumed[name], reference[name], rtol=1e-5, atol=1e-7, err_msg=f"{label}: {name}"
        )
    assert int(resumed["steps"]) == int(reference["steps"]) == 2 * 2 * STEPS_PER_EPOCH


@pytest.mark.slow
def test_killed_runs_resume_to_the_uninterrupted_weights_slots_steps_and_lrs(make_config, tmp_path):
    path, run_dir, out = deterministic_run(make_config, tmp_path, "full")
    finished = run_worker(path, out)
    assert finished.returncode == 0, finished.stderr[-3000:]
    reference = np.load(out)
    reference_losses = pd.read_csv(os.path.join(run_dir, "history.csv"))["loss"]
    reference_lrs = lr_log(out)
    # After epoch 1 the kill lands inside stage a; after epoch 2, between stages a and b.
    for kill_after, name in ((1, "mid_stage"), (2, "stage_boundary")):
        path, run_dir, out = deterministic_run(make_config, tmp_path, name)
        killed = run_worker(path, out, kill_after=kill_after)
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
        state = json.load(open(os.path.join(run_dir, "checkpoints", "state.json")))
        assert len(state["rows"]) == kill_after, name
        assert not os.path.exists(os.path.join(run_dir, "summary.json")), name
        assert not os.path.exists(out), name

        resumed = run_worker(path, out, resume=run_dir)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert f"resuming after epoch {kill_after} of 4" in resumed.stdout
        history = pd.read_csv(os.path.join(run_dir, "history.csv"))
        assert history["epoch"].tolist() == [0, 1, 2, 3]
        assert history["stage"].tolist() == [0, 0, 1, 1]
        assert history["image_size"].tolist() == [16, 16, 24, 24]
        lrs = lr_log(out)
        assert [step[0] for step in lrs] == list(range(2 * 2 * STEPS_PER_EPOCH)), name
        assert len({step[1] for step in lrs}) == len(lrs), "the one-cycle LR moves every step"
        np.testing.assert_allclose(lrs, reference_lrs, rtol=1e-6, err_msg=name)
        assert_same_state(np.load(out), reference, name)
        # The same batches in the same order: every epoch's training loss is the same.
        np.testing.assert_allclose(history["loss"], reference_losses, rtol=1e-5, err_msg=name)
        saved = yaml.safe_load(open(os.path.join(run_dir, "config.yaml")))
        assert [s["epochs"] for s in saved["train"]["stages"]] == [2, 2]


def test_resume_applies_the_given_config_and_refuses_what_it_cannot(make_config, tmp_path, capsys):
    from kerastricks.cli import main

    config = make_config(train={"stages": STAGES[:1], "steps_per_epoch": 2})
    path = str(tmp_path / "run.yaml")
    save_config(config, path)
    run_dir = os.path.join(config.output, config.name)
    assert main(["train", path]) == 0
    # A finished stage cannot grow: the message says how to train more.
    assert main(["train", path, "--resume", run_dir, "--set", "train.stages.0.epochs=3"]) == 2
    err = capsys.readouterr().err
    assert "train.stages.0.epochs" in err and "train.stages.1" in err
    # An appended stage trains; the smaller batch applies to it only.
    extra = ["--set", "train.stages.1.epochs=1", "--set", "train.stages.1.image_size=24"]
    extra += ["--set", "train.batch_size=8", "--set", "tta.transforms=[identity,hflip]"]
    assert main(["train", path, "--resume", run_dir, *extra]) == 0
    out = capsys.readouterr().out
    assert "resume applies train.batch_size: 16 -> 8" in out
    history = pd.read_csv(os.path.join(run_dir, "history.csv"))
    assert history["image_size"].tolist() == [16, 16, 24]
    saved = yaml.safe_load(open(os.path.join(run_dir, "config.yaml")))
    assert [s["batch_size"] for s in saved["train"]["stages"]] == [16, 8]
    assert saved["tta"]["transforms"] == ["identity", "hflip"]
    # A CV folder is not a train run.
    assert main(["train", path, "--resume", str(tmp_path / "runs")]) == 2
    assert "no kerastricks run there" in capsys.readouterr().err
