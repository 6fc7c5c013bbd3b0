"""Real distributed runs on the CPU: MirroredStrategy over 2 logical devices, and
MultiWorkerMirroredStrategy with 2 worker processes on 127.0.0.1."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

import kerastricks  # noqa: F401
from kerastricks.config import save_config

WORKER = os.path.join(os.path.dirname(__file__), "_distributed_worker.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def small_config(make_config, tmp_path, name):
    config = make_config(
        name=name,
        train={
            "batch_size": 8,
            "steps_per_epoch": 3,
            "validation_steps": 1,
            "stages": [{"epochs": 2, "image_size": 16, "lr": 1e-3}],
        },
    )
    path = str(tmp_path / f"{name}.yaml")
    save_config(config, path)
    return config, path


@pytest.mark.slow
def test_mirrored_two_replicas_keep_identical_weights(make_config, tmp_path):
    config, path = small_config(make_config, tmp_path, "mirrored")
    out = str(tmp_path / "mirrored.json")
    result = subprocess.run(
        [sys.executable, WORKER, "mirrored", path, out], capture_output=True, text=True, timeout=400
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.load(open(out))
    assert report["strategy"] == "mirrored" and report["replicas"] == 2
    assert report["epochs"] == 2 and report["steps"] == 6
    assert report["mirrored_variables"] > 50, "resnet18's weights are mirrored on 2 devices"
    assert report["differing"] == []
    assert all(np.isfinite(report["loss"]))
    assert os.path.exists(os.path.join(config.output, "mirrored", "summary.json"))


@pytest.mark.slow
def test_multi_worker_two_processes_finish(make_config, tmp_path):
    config, path = small_config(make_config, tmp_path, "multi")
    ports = [free_port(), free_port()]
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    processes = []
    for index in range(2):
        env = dict(os.environ)
        env["TF_CONFIG"] = json.dumps(
            {"cluster": cluster, "task": {"type": "worker", "index": index}}
        )
        out = str(tmp_path / f"worker{index}.json")
        processes.append(
            (
                subprocess.Popen(
                    [sys.executable, WORKER, "multi_worker", path, out],
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                ),
                out,
            )
        )
    reports = []
    for process, out in processes:
        output, _ = process.communicate(timeout=500)
        assert process.returncode == 0, output[-3000:]
        reports.append(json.load(open(out)))
    assert [r["strategy"] for r in reports] == ["multi_worker", "multi_worker"]
    assert [r["replicas"] for r in reports] == [2, 2]
    assert [r["is_chief"] for r in reports] == [True, False]
    assert [r["steps"] for r in reports] == [6, 6]
    run_dir = os.path.join(config.output, "multi")
    assert os.path.exists(os.path.join(run_dir, "summary.json"))
    assert not [n for n in os.listdir(run_dir) if n.startswith(".worker")]
