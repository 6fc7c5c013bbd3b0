"""Real distributed runs on the CPU: MirroredStrategy over 2 logical devices, and
MultiWorkerMirroredStrategy with 2 worker processes on 127.0.0.1, each compared with a
single-process run on the default strategy with the same global batch.

Equal weights need the same batches in the same order and a loss that does not depend on
how a global batch is split. BatchNorm breaks the second by design: each replica normalises
its own slice of the batch (no SyncBatchNorm here), so a BatchNorm network under 2 replicas
of 8 trains differently from 1 replica of 16. These runs use a ViT (LayerNorm: per sample),
`data.deterministic`, no augmentation and no dropout.
"""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

import kerastricks  # noqa: F401
from kerastricks.config import from_dict, save_config

WORKER = os.path.join(os.path.dirname(__file__), "_distributed_worker.py")
PER_REPLICA_BATCH = 8
STEPS = 2 * 2
# Float32 sums in another order (all-reduce of two half-batch gradients vs one batch):
# measured differences up to 1.5e-6 after the 4 steps; one AdamW step moves a weight by up
# to the LR (1e-3), and a run without all-reduce or with other batches differs by far more.
ATOL = 1e-5


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def vit_run(folder, records, name, batch_size):
    """A config file: 2 epochs x 2 steps of vit_tiny at 32 px, deterministic input."""
    config = from_dict(
        {
            "name": name,
            "seed": 1,
            "output": str(folder / "runs"),
            "data": {"records": records, "val_fold": 0, "deterministic": True},
            "model": {
                "backbone": "vit_tiny_patch16_224",
                "calibrate_bn": False,
                "head": {"dropout": 0.0},
            },
            "train": {
                "batch_size": batch_size,
                "steps_per_epoch": 2,
                "validation_steps": 1,
                "verbose": 0,
                "stages": [{"epochs": 2, "image_size": 32, "lr": 1e-3}],
            },
        }
    )
    path = str(folder / f"{name}.yaml")
    save_config(config, path)
    return config, path


def weights(out):
    return np.load(out + ".npz")


def assert_same_weights(got, expected, label):
    assert sorted(got.files) == sorted(expected.files), label
    assert len(expected.files) > 100, "vit_tiny's weights"
    for name in expected.files:
        np.testing.assert_allclose(
            got[name], expected[name], rtol=0, atol=ATOL, err_msg=f"{label}: {name}"
        )


@pytest.fixture(scope="module")
def single_process(tmp_path_factory, digits_records):
    """The reference: one replica on the default strategy with the global batch of two."""
    folder = tmp_path_factory.mktemp("single")
    _, path = vit_run(folder, digits_records, "single", 2 * PER_REPLICA_BATCH)
    out = str(folder / "single.json")
    result = subprocess.run(
        [sys.executable, WORKER, "default", path, out], capture_output=True, text=True, timeout=400
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.load(open(out))
    assert report["strategy"] == "default" and report["replicas"] == 1
    assert report["steps"] == STEPS
    return report, weights(out)


@pytest.mark.slow
def test_mirrored_two_replicas_match_one_replica_with_the_same_global_batch(
    tmp_path, digits_records, single_process
):
    reference, reference_weights = single_process
    config, path = vit_run(tmp_path, digits_records, "mirrored", PER_REPLICA_BATCH)
    out = str(tmp_path / "mirrored.json")
    result = subprocess.run(
        [sys.executable, WORKER, "mirrored", path, out], capture_output=True, text=True, timeout=400
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.load(open(out))
    assert report["strategy"] == "mirrored" and report["replicas"] == 2
    assert report["epochs"] == 2 and report["steps"] == STEPS
    assert report["mirrored_variables"] > 100, "vit_tiny's weights are mirrored on 2 devices"
    assert report["differing"] == []
    np.testing.assert_allclose(report["loss"], reference["loss"], rtol=1e-5)
    assert_same_weights(weights(out), reference_weights, "mirrored vs default")
    assert os.path.exists(os.path.join(config.output, "mirrored", "summary.json"))


@pytest.mark.slow
def test_multi_worker_two_processes_match_each_other_and_one_process(
    tmp_path, digits_records, single_process
):
    reference, reference_weights = single_process
    config, path = vit_run(tmp_path, digits_records, "multi", PER_REPLICA_BATCH)
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
    reports, outs = [], []
    for process, out in processes:
        output, _ = process.communicate(timeout=500)
        assert process.returncode == 0, output[-3000:]
        reports.append(json.load(open(out)))
        outs.append(out)
    assert [r["strategy"] for r in reports] == ["multi_worker", "multi_worker"]
    assert [r["replicas"] for r in reports] == [2, 2]
    assert [r["is_chief"] for r in reports] == [True, False]
    assert [r["steps"] for r in reports] == [STEPS, STEPS]
    np.testing.assert_allclose(reports[0]["loss"], reference["loss"], rtol=1e-5)
    chief, other = weights(outs[0]), weights(outs[1])
    # All-reduced updates: the two processes hold the same numbers, bit for bit.
    assert sorted(chief.files) == sorted(other.files)
    unequal = [n for n in chief.files if not np.array_equal(chief[n], other[n])]
    assert unequal == []
    # Each worker trained on its half of every global batch of the single-process run.
    assert_same_weights(chief, reference_weights, "multi-worker vs one process")
    run_dir = os.path.join(config.output, "multi")
    assert os.path.exists(os.path.join(run_dir, "summary.json"))
    assert not [n for n in os.listdir(run_dir) if n.startswith(".worker")]
