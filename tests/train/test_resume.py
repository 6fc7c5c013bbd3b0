"""kill -9 in the middle of a run, then --resume: same stages, epochs and schedule steps."""

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import yaml

import kerastricks  # noqa: F401
from kerastricks.config import save_config

STAGES = [
    {"name": "a", "epochs": 2, "image_size": 16, "unfreeze": "head", "lr": 3e-3},
    {"name": "b", "epochs": 2, "image_size": 24, "unfreeze": "all", "lr": 1e-3},
]


def cli(*args):
    return [sys.executable, "-m", "kerastricks.cli", *args]


@pytest.mark.slow
def test_kill_and_resume_gives_the_same_epochs_and_steps(make_config, tmp_path):
    config = make_config(train={"stages": STAGES, "steps_per_epoch": 4})
    path = str(tmp_path / "run.yaml")
    save_config(config, path)
    run_dir = os.path.join(config.output, config.name)
    state = os.path.join(run_dir, "checkpoints", "state.json")
    process = subprocess.Popen(
        cli("train", path), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 240
    while time.time() < deadline and process.poll() is None:
        if os.path.exists(state) and len(json.load(open(state))["rows"]) >= 1:
            break
        time.sleep(0.2)
    assert process.poll() is None, "the run ended before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    done_before = len(json.load(open(state))["rows"])
    assert 1 <= done_before < 4
    assert not os.path.exists(os.path.join(run_dir, "summary.json"))

    resumed = subprocess.run(
        cli("train", path, "--resume", run_dir), capture_output=True, text=True, timeout=400
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming after epoch {done_before}" in resumed.stdout
    history = pd.read_csv(os.path.join(run_dir, "history.csv"))
    assert history["epoch"].tolist() == [0, 1, 2, 3]
    assert history["stage"].tolist() == [0, 0, 1, 1]
    assert history["image_size"].tolist() == [16, 16, 24, 24]
    summary = json.load(open(os.path.join(run_dir, "summary.json")))
    assert summary["steps"] == 4 * 4, "the optimizer's step counter continues across the kill"
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
