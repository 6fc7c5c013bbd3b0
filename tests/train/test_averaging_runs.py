"""Weight averaging and gradient accumulation wired into the stage runner."""

import os

import numpy as np
import pytest
import tensorflow as tf

import kerastricks  # noqa: F401
from kerastricks.train import train
from kerastricks.train.build import build_model


@pytest.mark.slow
def test_swa_run_ends_on_the_mean_of_the_averaged_epochs(make_config):
    config = make_config(train={"swa": 2, "stages": [{"epochs": 3, "image_size": 16, "lr": 3e-3}]})
    result = train(config)
    checkpoints = tf.train.get_checkpoint_state(
        os.path.join(result.run_dir, "checkpoints", "last")
    ).all_model_checkpoint_paths
    assert len(checkpoints) == 2, "the raw weights of epochs 2 and 3 are kept"
    raw = []
    for path in checkpoints:
        model = build_model(config, 10, 16)
        tf.train.Checkpoint(model=model).read(path).expect_partial()
        raw.append({v.name: v.numpy() for v in model.trainable_weights})
    for variable in result.model.trainable_weights:
        expected = (raw[0][variable.name] + raw[1][variable.name]) / 2
        np.testing.assert_allclose(variable.numpy(), expected, rtol=1e-5, atol=1e-6)
    reloaded = build_model(config, 10, 16)
    reloaded.load_weights(os.path.join(result.run_dir, "checkpoints", "last.weights.h5"))
    for a, b in zip(reloaded.weights, result.model.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


@pytest.mark.slow
def test_ema_and_accumulation_runs_count_updates(make_config):
    config = make_config(
        train={
            "ema": 0.9,
            "accumulate_steps": 2,
            "batch_size": 8,
            "steps_per_epoch": None,
            "stages": [{"epochs": 1, "image_size": 16, "lr": 1e-3}],
        }
    )
    result = train(config)
    assert result.summary["steps"] == 320 // 16, "one update per 2 micro-batches of 8"
    inner = getattr(result.model.optimizer, "inner_optimizer", result.model.optimizer)
    averages = inner._model_variables_moving_average
    assert len(averages) == len(result.model.trainable_weights), "one EMA per trainable weight"
    # The run ends on the averaged weights: the model holds exactly the EMA values.
    for average, weight in zip(averages, result.model.trainable_weights, strict=True):
        np.testing.assert_allclose(weight.numpy(), average.numpy(), rtol=1e-6, atol=1e-7)
    assert np.isfinite(result.summary["val_accuracy"])
