"""Runs a tiny training under a strategy in a fresh process (tests/train/test_distributed.py).

Usage: python _distributed_worker.py default|mirrored|multi_worker CONFIG.yaml OUT.json

Writes a JSON report to OUT.json and the trained weights (in `model.weights` order; the
first replica's copy of a mirrored variable) to OUT.json.npz.
"""

import json
import sys

import numpy as np
import tensorflow as tf

import kerastricks  # noqa: F401


def main() -> None:
    mode, config_path, out = sys.argv[1:4]
    if mode == "mirrored":
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2
        )
    from kerastricks.config import load_config
    from kerastricks.train import train
    from kerastricks.train.strategy import detect_hardware

    config = load_config(config_path)
    hardware = detect_hardware({"multi_worker": "auto"}.get(mode, mode))
    result = train(config, hardware=hardware)
    differing, mirrored = [], 0
    for variable in result.model.trainable_weights:
        values = getattr(variable, "values", None)
        if values and len(values) > 1:
            mirrored += 1
            first = values[0].numpy()
            if not all(np.array_equal(first, v.numpy()) for v in values[1:]):
                differing.append(variable.name)
    report = {
        "strategy": hardware.name,
        "replicas": hardware.replicas,
        "is_chief": hardware.is_chief,
        "epochs": len(result.history),
        "steps": result.summary["steps"],
        "mirrored_variables": mirrored,
        "differing": differing,
        "loss": [row["loss"] for row in result.history],
    }
    with open(out, "w") as f:
        json.dump(report, f)
    weights = {f"{i}/{v.name}": v.numpy() for i, v in enumerate(result.model.weights)}
    np.savez(out + ".npz", **weights)


if __name__ == "__main__":
    main()
