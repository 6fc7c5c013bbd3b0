"""Predictions under a distribution strategy: padded static batches, replicas gathered in
order, and the same numbers as the default strategy, row for row.

The MirroredStrategy check runs this file as a script in a fresh process, because logical
CPU devices must be configured before TensorFlow initialises its devices.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

import kerastricks  # noqa: F401
from kerastricks.eval.distributed import pad_batches
from kerastricks.eval.tta import predict_tta

TTA = {"transforms": ["hflip", "scale1.1"], "beta": 0.25}
# 6 per replica: 80 records of fold 0 and 400 in all are multiples of neither 6 nor 12.
PER_REPLICA = 6


def id_dataset(count: int, batch: int, size: int = 8) -> tf.data.Dataset:
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (count, size, size, 3)).astype(np.float32)
    labels = np.eye(3, dtype=np.float32)[rng.integers(0, 3, count)]
    ids = np.array([f"img{i:03d}" for i in range(count)])
    return tf.data.Dataset.from_tensor_slices((images, labels, ids)).batch(batch)


def test_pad_batches_keeps_every_row_once_with_static_shapes():
    padded = pad_batches(id_dataset(23, 5), 8)
    images_spec, labels_spec, ids_spec, valid_spec = padded.element_spec
    assert images_spec.shape == (8, 8, 8, 3) and ids_spec.shape == (8,)
    assert labels_spec.shape == (8, 3) and valid_spec.dtype == tf.bool
    batches = list(padded.as_numpy_iterator())
    assert len(batches) == 3
    valid = np.concatenate([b[3] for b in batches])
    ids = np.concatenate([b[2] for b in batches])
    assert valid.sum() == 23 and not valid[23:].any()
    assert [i.decode() for i in ids[valid]] == [f"img{i:03d}" for i in range(23)]
    assert (batches[-1][0][7] == 0).all() and batches[-1][2][7] == b""


def tiny_model() -> tf.keras.Model:
    return tf.keras.Sequential(
        [
            tf.keras.layers.Input((8, 8, 3)),
            tf.keras.layers.Rescaling(1 / 255),
            tf.keras.layers.Conv2D(4, 3, activation="relu"),
            tf.keras.layers.GlobalAveragePooling2D(),
            tf.keras.layers.Dense(3),
        ]
    )


def test_xla_compiled_tta_step_matches_eager_and_shows_progress(capsys):
    model = tiny_model()
    dataset = id_dataset(11, 4)
    transforms = ["hflip", "rot90", "scale1.1"]
    eager = predict_tta(model, dataset, transforms, "single_label", 0.25)
    assert capsys.readouterr().out == "", "verbose=0 is silent"
    compiled = predict_tta(
        model, dataset, transforms, "single_label", 0.25, jit_compile=True, steps=3, verbose=1
    )
    assert "3/3" in capsys.readouterr().out
    np.testing.assert_allclose(compiled["tta"], eager["tta"], atol=1e-5)
    np.testing.assert_allclose(compiled["plain"], eager["plain"], atol=1e-5)
    assert list(compiled["ids"]) == [f"img{i:03d}" for i in range(11)]
    assert compiled["targets"].shape == (11, 3)


def fold_ids(records: str, fold: int | None = None) -> list[str]:
    frame = pd.read_csv(os.path.join(records, "folds.csv"))
    if fold is not None:
        frame = frame[frame["fold"] == fold]
    return frame["id"].astype(str).tolist()


def assert_complete(ids: np.ndarray, expected: list[str]) -> None:
    assert len(set(ids)) == len(ids), "a row was duplicated"
    assert sorted(ids) == sorted(expected), "a row was dropped or invented"


@pytest.mark.slow
def test_mirrored_predictions_equal_the_default_strategy(make_config, digits_records, tmp_path):
    from kerastricks.config import save_config
    from kerastricks.train import train

    config = make_config(
        name="pred",
        train={
            "batch_size": PER_REPLICA,
            "steps_per_epoch": 3,
            "validation_steps": 1,
            "stages": [{"epochs": 1, "image_size": 16, "lr": 1e-3}],
        },
        tta=TTA,
    )
    save_config(config, str(tmp_path / "pred.yaml"))
    run_dir = train(config).run_dir
    out = str(tmp_path / "out")
    result = subprocess.run(
        [sys.executable, __file__, run_dir, digits_records, out],
        capture_output=True,
        text=True,
        timeout=500,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.load(open(os.path.join(out, "report.json")))
    assert report["replicas"] == 2
    assert report["mirrored_variables"]["mirrored"] > 50, "the model was built in the scope"
    assert report["mirrored_variables"]["default"] == 0
    default = np.load(os.path.join(out, "default.npz"))
    mirrored = np.load(os.path.join(out, "mirrored.npz"))

    # OOF-style: fold 0 (80 records: 13 batches of 6, 7 of 12, both with a partial last one).
    assert_complete(default["oof_ids"], fold_ids(digits_records, 0))
    assert list(mirrored["oof_ids"]) == list(default["oof_ids"])
    for key in ("oof_plain", "oof_tta", "oof_targets"):
        np.testing.assert_allclose(mirrored[key], default[key], atol=1e-5, err_msg=key)
    assert np.ptp(default["oof_plain"], axis=0).max() > 1e-3, "rows differ: order is tested"

    # predict_tta on a dataset batched by 7, not a multiple of the 2 replicas.
    assert_complete(default["tta_ids"], fold_ids(digits_records))
    assert list(mirrored["tta_ids"]) == list(default["tta_ids"])
    np.testing.assert_allclose(mirrored["tta_tta"], default["tta_tta"], atol=1e-5)

    # predictions.csv of `predict` over all 400 records.
    frames = {
        name: pd.read_csv(os.path.join(out, name, "predictions.csv"), dtype={"id": str})
        for name in ("default", "mirrored")
    }
    assert_complete(frames["default"]["id"].to_numpy(), fold_ids(digits_records))
    assert frames["mirrored"]["id"].tolist() == frames["default"]["id"].tolist()
    columns = [c for c in frames["default"].columns if c.startswith("p_")]
    np.testing.assert_allclose(
        frames["mirrored"][columns].to_numpy(), frames["default"][columns].to_numpy(), atol=1e-5
    )
    assert os.path.getsize(os.path.join(out, "mirrored", "gradcam.png")) > 1000


def _worker(run_dir: str, records: str, out: str) -> None:
    """Predicts with the default strategy, then MirroredStrategy over 2 logical CPUs."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from kerastricks.config import load_config
    from kerastricks.data import build_dataset, resolve_records
    from kerastricks.eval.distributed import prediction_strategy
    from kerastricks.eval.grad_cam_grid import explain_run
    from kerastricks.eval.inference import load_trained_model, predict, predict_records
    from kerastricks.train.strategy import detect_hardware

    mirrored = detect_hardware("mirrored")
    config = load_config(os.path.join(run_dir, "config.yaml"))
    source = resolve_records(records)
    report = {"replicas": mirrored.replicas, "mirrored_variables": {}}
    for name, hardware in (("default", None), ("mirrored", mirrored)):
        model, run_config = load_trained_model(run_dir, hardware=hardware)
        report["mirrored_variables"][name] = sum(
            len(getattr(v, "values", ())) > 1 for v in model.weights
        )
        oof = predict_records(
            model, run_config, source, "single_label", folds=[0], hardware=hardware
        )
        dataset = build_dataset(
            source, 16, batch_size=7, training=False, with_ids=True, num_classes=10
        )
        tta = predict_tta(
            model, dataset, ["hflip", "scale1.1"], "single_label", 0.25,
            strategy=prediction_strategy(hardware),
        )  # fmt: skip
        arrays = {f"oof_{k}": v for k, v in oof.items()}
        arrays.update({f"tta_{k}": v for k, v in tta.items()})
        np.savez(os.path.join(out, f"{name}.npz"), **arrays)
        predict(config, run_dir, records, os.path.join(out, name), hardware=hardware)
        explain_run(config, run_dir, os.path.join(out, name, "gradcam.png"), 4, hardware=hardware)
        tf.keras.backend.clear_session()
    with open(os.path.join(out, "report.json"), "w") as f:
        json.dump(report, f)


if __name__ == "__main__":
    os.makedirs(sys.argv[3], exist_ok=True)
    _worker(*sys.argv[1:4])
