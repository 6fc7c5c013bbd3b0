"""TTA: fastai's blend arithmetic and the named transforms."""

import numpy as np
import pytest
import tensorflow as tf

import kerastricks  # noqa: F401
from kerastricks.eval.tta import blend_tta, get_tta_transform, to_probabilities


def test_fastai_blend_weights_plain_by_beta():
    plain = np.array([[0.8, 0.2]])
    augmented = [np.array([[0.6, 0.4]]), np.array([[0.4, 0.6]])]
    blended = blend_tta(plain, augmented, beta=0.25)
    np.testing.assert_allclose(blended, [[0.75 * 0.5 + 0.25 * 0.8, 0.75 * 0.5 + 0.25 * 0.2]])


def test_blend_without_beta_is_the_mean_of_every_pass():
    plain = np.array([[1.0, 0.0]])
    blended = blend_tta(plain, [np.array([[0.0, 1.0]]), np.array([[0.5, 0.5]])], beta=None)
    np.testing.assert_allclose(blended, [[0.5, 0.5]])
    assert blend_tta(plain, [], beta=0.25) is plain


def test_beta_out_of_range_is_an_error():
    with pytest.raises(ValueError, match="tta.beta"):
        blend_tta(np.ones((1, 2)), [np.ones((1, 2))], beta=1.5)


def test_named_transforms_do_what_they_say():
    images = tf.reshape(tf.range(2 * 4 * 4 * 3, dtype=tf.float32), (2, 4, 4, 3))
    np.testing.assert_array_equal(get_tta_transform("hflip")(images), images.numpy()[:, :, ::-1])
    np.testing.assert_array_equal(get_tta_transform("vflip")(images), images.numpy()[:, ::-1])
    np.testing.assert_array_equal(
        get_tta_transform("rot180")(images), images.numpy()[:, ::-1, ::-1]
    )
    assert get_tta_transform("scale1.5")(images).shape == images.shape
    with pytest.raises(ValueError, match="closest: \\['hflip'"):
        get_tta_transform("hflp")


def test_probabilities_per_task():
    logits = np.array([[0.0, np.log(3.0)]])
    np.testing.assert_allclose(to_probabilities(logits, "single_label"), [[0.25, 0.75]])
    np.testing.assert_allclose(to_probabilities(np.zeros((1, 2)), "multi_label"), [[0.5, 0.5]])
