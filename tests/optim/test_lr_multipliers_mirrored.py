"""LR multipliers under a real 2-replica MirroredStrategy `model.fit` (2 logical CPUs)."""

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
    from kerastricks.optim import with_lr_multipliers

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2
    )
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 5)).astype("float32")
    y = rng.normal(size=(32, 3)).astype("float32")

    def fit(strategy, multipliers, freeze_body=False, lr=0.1):
        with strategy.scope():
            tf.keras.utils.set_random_seed(0)
            model = tf.keras.Sequential([
                tf.keras.layers.Dense(8, activation="relu", name="body"),
                tf.keras.layers.Dense(3, name="head"),
            ])
            model.build((None, 5))
            start = [w.numpy() for w in model.weights]
            optimizer = tf.keras.optimizers.SGD(lr)
            if multipliers is not None:
                optimizer = with_lr_multipliers(optimizer, [model.layers[0], model.layers[1]],
                                                multipliers)
            model.layers[0].trainable = not freeze_body
            model.compile(optimizer=optimizer, loss="mse")
        model.fit(x, y, batch_size=16, epochs=2, verbose=0, shuffle=False)
        kind = type(getattr(optimizer, "_lr_multipliers", None)).__name__
        return start, [w.numpy().tolist() for w in model.weights], kind

    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    start, got, kind = fit(mirrored, [0.0, 2.0])
    _, single, _ = fit(tf.distribute.get_strategy(), [0.0, 2.0])
    _, frozen_reference, _ = fit(tf.distribute.get_strategy(), None, freeze_body=True, lr=0.2)
    print(json.dumps({
        "replicas": mirrored.num_replicas_in_sync, "variable_kind": kind,
        "start": [w.tolist() for w in start], "mirrored": got, "single": single,
        "frozen_reference": frozen_reference,
    }))
    """
)


def test_two_replica_fit_applies_exact_multipliers():
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=240
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["replicas"] == 2
    assert report["variable_kind"] == "MirroredVariable"
    start, mirrored = report["start"], report["mirrored"]
    # Body (kernel, bias) has multiplier 0: not moved at all on any replica.
    for index in (0, 1):
        np.testing.assert_array_equal(mirrored[index], start[index])
    # Head has multiplier 2 on lr 0.1: the same as plain SGD(0.2) with the body frozen,
    # and the same as the single-device run.
    for index in range(4):
        np.testing.assert_allclose(
            mirrored[index], report["frozen_reference"][index], rtol=1e-5, atol=1e-6
        )
        np.testing.assert_allclose(mirrored[index], report["single"][index], rtol=1e-5, atol=1e-6)
    assert not np.allclose(mirrored[2], start[2])
