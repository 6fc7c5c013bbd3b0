"""Lookahead under a 2-replica MirroredStrategy `model.fit` (2 logical CPUs), against the
default strategy and a numpy run of the Lookahead paper's rule (Zhang et al. 2019, Alg. 1,
with tfa's timing: slow weights start as the initial weights, syncs after steps k, 2k...)."""

import json
import subprocess
import sys
import textwrap

import numpy as np

# Logical devices must be configured before TensorFlow initialises its devices, so the
# strategy runs in a fresh interpreter.
SCRIPT = textwrap.dedent(
    """
    import json
    import kerastricks
    import numpy as np
    import tensorflow as tf
    from kerastricks.optim import Lookahead

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2
    )
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 5)).astype("float32")
    y = rng.normal(size=(32, 3)).astype("float32")

    def fit(strategy):
        with strategy.scope():
            tf.keras.utils.set_random_seed(0)
            model = tf.keras.Sequential([tf.keras.layers.Dense(3)])
            model.build((None, 5))
            start = [w.numpy().tolist() for w in model.weights]
            optimizer = Lookahead(
                tf.keras.optimizers.SGD(0.1, momentum=0.9), sync_period=3, slow_step_size=0.3
            )
            model.compile(optimizer=optimizer, loss="mse")
        # 2 steps an epoch, 8 steps: syncs after steps 3 and 6, then two fast steps.
        model.fit(x, y, batch_size=16, epochs=4, verbose=0, shuffle=False)
        return {
            "start": start,
            "weights": [w.numpy().tolist() for w in model.weights],
            "slow": [w.numpy().tolist() for w in optimizer._slow_weights],
            "slow_kind": type(optimizer._slow_weights[0]).__name__,
            "iterations": int(optimizer.iterations.numpy()),
        }

    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    report = {"replicas": mirrored.num_replicas_in_sync, "mirrored": fit(mirrored),
              "single": fit(tf.distribute.get_strategy()),
              "x": x.tolist(), "y": y.tolist()}
    print(json.dumps(report))
    """
)


def _numpy_lookahead_fit(x, y, kernel, bias, steps, batch=16, k=3, alpha=0.3):
    """SGD(0.1, momentum 0.9) on Dense + MSE (mean over batch and outputs), with Lookahead."""
    fast = [kernel.copy(), bias.copy()]
    slow = [kernel.copy(), bias.copy()]
    buffers = [np.zeros_like(kernel), np.zeros_like(bias)]
    for t in range(1, steps + 1):
        start = ((t - 1) * batch) % len(x)
        xb, yb = x[start : start + batch], y[start : start + batch]
        residual = xb @ fast[0] + fast[1] - yb
        scale = 2.0 / residual.size
        grads = [scale * xb.T @ residual, scale * residual.sum(axis=0)]
        for i in range(2):
            buffers[i] = 0.9 * buffers[i] - 0.1 * grads[i]
            fast[i] = fast[i] + buffers[i]
        if t % k == 0:
            for i in range(2):
                slow[i] = slow[i] + alpha * (fast[i] - slow[i])
                fast[i] = slow[i].copy()
    return fast, slow


def test_two_replica_lookahead_matches_single_device_and_numpy():
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=240
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["replicas"] == 2
    mirrored, single = report["mirrored"], report["single"]
    assert mirrored["slow_kind"] == "MirroredVariable"
    assert mirrored["iterations"] == single["iterations"] == 8
    x, y = np.array(report["x"]), np.array(report["y"])
    kernel, bias = (np.array(w) for w in mirrored["start"])
    fast, slow = _numpy_lookahead_fit(x, y, kernel, bias, steps=8)
    for run in (mirrored, single):
        for i in range(2):
            np.testing.assert_allclose(run["weights"][i], fast[i], rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(run["slow"][i], slow[i], rtol=1e-5, atol=1e-6)
    # The last two steps moved the fast weights away from the slow ones.
    assert not np.allclose(mirrored["weights"][0], mirrored["slow"][0], atol=1e-4)
    # alpha really is 0.3: the same run with tfa's default 0.5 ends elsewhere.
    half, _ = _numpy_lookahead_fit(x, y, kernel, bias, steps=8, alpha=0.5)
    assert np.abs(half[0] - fast[0]).max() > 1e-3
