"""Shared helpers for the models tests (tiny sizes: 32 px images)."""

import numpy as np
import pytest
import tensorflow as tf

import kerastricks  # noqa: F401

IMAGE_SIZE = 32


@pytest.fixture
def pixels() -> tf.Tensor:
    """Two random images in [0, 255], as the data pipeline yields them."""
    rng = np.random.default_rng(0)
    return tf.constant(rng.uniform(0, 255, (2, IMAGE_SIZE, IMAGE_SIZE, 3)).astype("float32"))


def _assert_covers_once(model: tf.keras.Model, groups: list) -> None:
    refs = [variable.ref() for group in groups for variable in group.variables]
    assert len(refs) == len(set(refs)) == len(model.weights)
    assert set(refs) == {variable.ref() for variable in model.weights}


@pytest.fixture
def assert_covers_once():
    """Asserts that every variable of a model is in exactly one of the groups."""
    return _assert_covers_once
