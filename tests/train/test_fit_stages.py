"""`fit_stages` and `fine_tune` on a plain Keras model (no tfimm) and in-memory tf.data:
freezing and LR multipliers per stage, a size change, resume after kill -9, MirroredStrategy;
and `build_dataset`'s default epoch, which ends."""

import importlib.util
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

import kerastricks  # noqa: F401
from kerastricks.fit import Stage, fine_tune, fit_stages
from kerastricks.optim import get_lr_multipliers

WORKER = os.path.join(os.path.dirname(__file__), "_fit_stages_worker.py")
_spec = importlib.util.spec_from_file_location("fit_stages_worker", WORKER)
worker = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(worker)


class Probe(tf.keras.callbacks.Callback):
    """Per optimizer step: the LR it applied, the LR multipliers and the trainable layers;
    per stage (one `fit`): the weights at its end."""

    def __init__(self):
        super().__init__()
        self.steps, self.ends = [], []

    def on_train_batch_end(self, batch, logs=None):
        # The Keras 2 optimizer's `learning_rate` is its schedule at the step just applied.
        optimizer = self.model.optimizer
        trainable = [layer.name for layer in self.model.layers if layer.trainable_weights]
        multipliers = get_lr_multipliers(optimizer)
        self.steps.append((float(optimizer.learning_rate), multipliers, trainable))

    def on_train_end(self, logs=None):
        self.ends.append({v.name: v.numpy().copy() for v in self.model.weights})


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run: 2 epochs at 16 px with the head only, 2 at 24 px with all."""
    run_dir = str(tmp_path_factory.mktemp("fit") / "full")
    probe = Probe()
    history = worker.fit(run_dir, callbacks=[probe])
    return run_dir, history, probe, worker.state_of(history)


def test_plain_model_trains_two_stages_with_a_size_change(reference):
    run_dir, history, probe, _ = reference
    assert history.history["image_size"] == [16, 16, 24, 24]
    assert history.history["stage_name"] == ["head", "head", "all", "all"]
    assert history.steps == 4 * worker.STEPS_PER_EPOCH
    initial = {v.name: v.numpy() for v in worker.make_model().weights}
    head_stage, all_stage = probe.ends
    for name, value in initial.items():
        in_head = name.startswith("head/")
        # Stage 1: the conv and BatchNorm groups are frozen, statistics included.
        assert np.array_equal(head_stage[name], value) != in_head, name
    assert not np.array_equal(all_stage["conv/kernel:0"], head_stage["conv/kernel:0"])
    assert not np.array_equal(all_stage["norm/moving_mean:0"], head_stage["norm/moving_mean:0"])
    steps = worker.STEPS_PER_EPOCH * 2
    assert {tuple(s[2]) for s in probe.steps[:steps]} == {("head",)}
    assert {tuple(s[2]) for s in probe.steps[steps:]} == {("conv", "norm", "head")}
    # Stage 2's slice(1e-5, 1e-3) over 3 groups, relative to the head.
    np.testing.assert_allclose(probe.steps[-1][1], [1e-2, 1e-1, 1.0], rtol=1e-6)
    frame = pd.read_csv(os.path.join(run_dir, "history.csv"))
    assert frame["image_size"].tolist() == [16, 16, 24, 24]
    for name in ("best.weights.h5", "last.weights.h5", "state.json"):
        assert os.path.exists(os.path.join(run_dir, "checkpoints", name)), name


@pytest.mark.slow
def test_killed_run_resumes_to_the_uninterrupted_weights_and_steps(reference, tmp_path):
    _, full, _, expected = reference
    run_dir, out = str(tmp_path / "run"), str(tmp_path / "killed.npz")
    # Killed after 3 of 4 epochs: inside stage 2, whose resumed stream skips what it read.
    command = [sys.executable, WORKER, "kill", run_dir, out, "3"]
    killed = subprocess.run(command, capture_output=True, text=True, timeout=400)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    state = json.load(open(os.path.join(run_dir, "checkpoints", "state.json")))
    assert len(state["rows"]) == 3
    resumed = worker.fit(run_dir)
    assert resumed.history["image_size"] == [16, 16, 24, 24]
    np.testing.assert_allclose(resumed.history["loss"], full.history["loss"], rtol=1e-5)
    got = worker.state_of(resumed)
    assert sorted(got) == sorted(expected)
    for name, value in expected.items():
        np.testing.assert_allclose(got[name], value, rtol=1e-5, atol=1e-7, err_msg=name)
    with pytest.raises(ValueError, match=r"stages\[0\] \('head'\).*trained with"):
        fit_stages(
            worker.make_model,
            [Stage(name="head", epochs=2, image_size=16, lr=1e-2), *worker.stages()[1:]],
            worker.datasets,
            loss="categorical_crossentropy",
            steps_per_epoch=worker.STEPS_PER_EPOCH,
            run_dir=run_dir,
        )


@pytest.mark.slow
def test_fit_stages_under_mirrored_strategy_matches_one_device(tmp_path):
    out = str(tmp_path / "mirrored.json")
    result = subprocess.run(
        [sys.executable, WORKER, "mirrored", out], capture_output=True, text=True, timeout=400
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.load(open(out))
    assert report["replicas"] == 2
    assert report["replicated"] >= 4, "conv, norm and head variables live on both devices"
    assert report["differing"] == []
    assert report["steps"] == 4 * worker.STEPS_PER_EPOCH
    assert report["image_size"] == [16, 16, 24, 24]
    np.testing.assert_allclose(report["loss"], report["single_loss"], rtol=1e-5)
    assert report["max_weight_difference"] < 1e-5


def test_fine_tune_freezes_then_unfreezes_with_fastai_lrs():
    train_ds, val_ds = worker.datasets(16)
    probe = Probe()
    history = fine_tune(
        worker.make_model(),
        (train_ds, val_ds),
        epochs=2,
        base_lr=2e-3,
        freeze_epochs=1,
        loss=tf.keras.losses.CategoricalCrossentropy(from_logits=True),
        callbacks=[probe],
        verbose=0,
    )
    steps = 48 // worker.BATCH  # one pass over the fixed dataset per epoch
    assert history.steps == 3 * steps
    assert history.history["stage_name"] == ["frozen", "unfrozen", "unfrozen"]
    assert history.history["image_size"] == [16, 16, 16], "read from the dataset"
    frozen, unfrozen = probe.steps[:steps], probe.steps[steps:]
    assert {tuple(s[2]) for s in frozen} == {("head",)}
    assert {tuple(s[2]) for s in unfrozen} == {("conv", "norm", "head")}
    # fastai: fit_one_cycle(freeze_epochs, base_lr, pct_start=0.99), then base_lr / 2 over
    # slice(base_lr / 2 / lr_mult, base_lr / 2) with pct_start=0.3, div=5.
    expected = fastai_one_cycle(2e-3, steps, 0.99, 25.0)
    expected += fastai_one_cycle(1e-3, 2 * steps, 0.3, 5.0)
    np.testing.assert_allclose([s[0] for s in probe.steps], expected, rtol=1e-5)
    np.testing.assert_allclose(unfrozen[0][1], [1e-2, 1e-1, 1.0], rtol=1e-6)


def fastai_one_cycle(max_lr, total, pct_start, div, div_final=1e5):
    """fastai's `combined_cos(pct_start, max_lr / div, max_lr, max_lr / div_final)` per step."""

    def sched_cos(start, end, pos):
        return start + (1 + np.cos(np.pi * (1 - pos))) * (end - start) / 2

    lrs = []
    for step in range(total):
        pos = step / total
        if pos < pct_start:
            lrs.append(sched_cos(max_lr / div, max_lr, pos / pct_start))
        else:
            lrs.append(sched_cos(max_lr, max_lr / div_final, (pos - pct_start) / (1 - pct_start)))
    return lrs


def test_a_dataset_without_end_needs_steps_per_epoch():
    endless = tf.data.Dataset.from_tensors((tf.zeros([2, 8, 8, 3]), tf.zeros([2, 3]))).repeat()
    with pytest.raises(ValueError, match=r"length is infinite.*steps_per_epoch"):
        fit_stages(worker.make_model(), [Stage(epochs=1)], endless, loss="mse")


def test_build_dataset_default_is_one_counted_epoch_with_the_yaml_resize(digits_records):
    from kerastricks.config import from_dict
    from kerastricks.data import build_dataset

    def first_batch(**resize):
        dataset = build_dataset(
            digits_records, 16, 32, training=True, seed=0, exclude_folds=[0], **resize
        )
        return next(iter(dataset))[0].numpy()

    dataset = build_dataset(digits_records, 16, 32, training=True, seed=0, exclude_folds=[0])
    assert int(dataset.cardinality()) == 320 // 32
    assert sum(1 for _ in dataset) == 320 // 32
    # The YAML default, in Python too.
    resize = from_dict({}).data.resize
    np.testing.assert_array_equal(first_batch(), first_batch(resize=resize))
    assert not np.array_equal(first_batch(), first_batch(resize="random_resized_crop"))


def test_a_batch_size_the_datasets_cannot_take_is_refused_by_name():
    data = tf.data.Dataset.from_tensor_slices((tf.zeros([8, 4]), tf.zeros([8, 2]))).batch(4)
    model = tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="batch_size=16 cannot be applied"):
        fit_stages(model, [Stage(epochs=1, lr=1e-3)], (data, None), loss="mse", batch_size=16)
