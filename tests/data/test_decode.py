import kerastricks  # noqa: F401  (selects tf-keras before TensorFlow is imported)

# isort: split
import numpy as np
import pytest
import tensorflow as tf

from kerastricks.data import decode


@pytest.fixture(scope="module")
def photo(kt) -> np.ndarray:
    return kt.sample_images(1, size=256)[0]


def test_dct_ratio_is_chosen_from_the_target(photo, kt):
    jpeg = tf.constant(kt.encode(photo))
    # 256 px stored: 64 px fits 4x, 100 px fits 2x, 200 px needs the full decode.
    assert decode.decode_image(jpeg, 64).shape == (64, 64, 3)
    assert decode.decode_image(jpeg, 100).shape == (128, 128, 3)
    assert decode.decode_image(jpeg, 200).shape == (256, 256, 3)
    assert decode.decode_image(jpeg).shape == (256, 256, 3)
    assert int(decode.jpeg_ratio(tf.constant([256, 256]), (32, 32))) == 3  # ratio 8


def test_window_decode_picks_the_coarsest_scale_that_covers_the_target(photo, kt):
    jpeg = tf.constant(kt.encode(photo))  # 256 px stored
    window = tf.constant([64, 64, 128, 128])
    shapes = {
        target: decode.decode_window(jpeg, lambda hw: window, (target, target)).shape[0]
        for target in (16, 32, 64, 100)
    }
    assert shapes == {16: 16, 32: 32, 64: 64, 100: 128}  # scales 8, 4, 2 and 1
    half = decode.decode_window(jpeg, lambda hw: window, (64, 64))
    expected = tf.io.decode_and_crop_jpeg(jpeg, [32, 32, 64, 64], channels=3, ratio=2)
    np.testing.assert_array_equal(half, expected)


def test_dct_decode_is_close_to_full_decode_and_resize(photo, kt):
    jpeg = tf.constant(kt.encode(photo))
    ours = decode.decode_and_resize(jpeg, 64).numpy()
    full = tf.image.resize(tf.io.decode_jpeg(jpeg), [64, 64], antialias=True).numpy()
    assert ours.dtype == np.float32 and ours.shape == (64, 64, 3)
    assert np.abs(ours - full).mean() < 4.0
    assert 0.0 <= ours.min() and ours.max() <= 255.0


@pytest.mark.parametrize("policy", decode.RESIZE_POLICIES)
@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_each_policy_gives_the_target_size(photo, policy, fmt, kt):
    image_bytes = tf.constant(kt.encode(photo[:200], fmt))  # 200 x 256, not square
    out = decode.decode_and_resize(image_bytes, (40, 56), policy, seed=tf.constant([1, 2]))
    assert out.shape == (40, 56, 3)
    assert out.dtype == tf.float32


def test_center_crop_keeps_the_middle(kt):
    image = np.zeros((60, 120, 3), np.uint8)
    image[:, 30:90] = 255  # the central square is white, the sides black
    out = decode.decode_and_resize(tf.constant(kt.encode(image, "PNG")), 20, "center_crop")
    assert out.numpy().min() == 255.0
    squashed = decode.decode_and_resize(tf.constant(kt.encode(image, "PNG")), 20, "squash")
    assert squashed.numpy()[:, 0].max() == 0.0


def test_grayscale_becomes_three_channels(kt):
    gray = (np.arange(32 * 32) % 256).astype(np.uint8).reshape(32, 32)
    for fmt in ("PNG", "JPEG"):
        out = decode.decode_and_resize(tf.constant(kt.encode(gray, fmt)), 16)
        assert out.shape == (16, 16, 3)
        np.testing.assert_allclose(out[..., 0], out[..., 2])


def test_random_resized_crop_is_seeded(photo, kt):
    jpeg = tf.constant(kt.encode(photo))
    policy = "random_resized_crop"
    a = decode.decode_and_resize(jpeg, 32, policy, tf.constant([3, 4]))
    b = decode.decode_and_resize(jpeg, 32, policy, tf.constant([3, 4]))
    c = decode.decode_and_resize(jpeg, 32, policy, tf.constant([5, 6]))
    np.testing.assert_array_equal(a, b)
    assert np.abs(a.numpy() - c.numpy()).mean() > 1.0


def test_bad_arguments_are_named(kt):
    with pytest.raises(ValueError, match=r"resize: unknown value .* Choose one of"):
        decode.check_resize_policy("stretch")
    with pytest.raises(ValueError, match="needs a stateless seed"):
        decode.decode_and_resize(tf.constant(b"x"), 8, "random_resized_crop")


def test_resize_of_uint8_gives_the_uint8_kernel_values():
    # resize casts uint8 to float32 first (a faster kernel); the values must not change.
    image = tf.random.stateless_uniform([150, 97, 3], seed=[5, 6], maxval=256, dtype=tf.int32)
    image = tf.cast(image, tf.uint8)
    for size in ((128, 128), (64, 40)):
        out = decode.resize(image, size)
        assert out.dtype == tf.float32 and out.shape == (*size, 3)
        expected = tf.image.resize(image, size, method="bilinear")
        np.testing.assert_allclose(out, expected, atol=1e-3)
