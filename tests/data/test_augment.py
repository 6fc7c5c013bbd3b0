import kerastricks  # noqa: F401  (selects tf-keras before TensorFlow is imported)

# isort: split
import numpy as np
import pytest
import tensorflow as tf

from kerastricks.data.augment import (
    MixUpCutMix,
    RandomAffine,
    affine_matrices,
    affine_transform,
    list_augmentations,
    random_affine,
    resolve_augmentations,
)

SEED = tf.constant([3, 4], tf.int64)


def _batch(size=16, batch=4):
    return tf.random.stateless_uniform([batch, size, size, 3], seed=[1, 2], maxval=255.0)


def _params(batch, **values):
    names = ("rotate", "shear", "zoom", "shift_y", "shift_x")
    defaults = {"zoom": 1.0}
    return [tf.fill([batch], float(values.get(n, defaults.get(n, 0.0)))) for n in names]


def test_affine_under_xla_identity_and_rot90():
    images = _batch()
    transform = tf.function(affine_transform, jit_compile=True)
    identity = affine_matrices(*_params(4), 16, 16)
    np.testing.assert_allclose(transform(images, identity), images, atol=1e-3)
    quarter = affine_matrices(*_params(4, rotate=90.0), 16, 16)
    np.testing.assert_allclose(transform(images, quarter), tf.image.rot90(images), atol=1e-3)


def test_affine_shift_and_flip_move_pixels_exactly():
    images = _batch()
    shifted = affine_transform(
        images, affine_matrices(*_params(4, shift_x=3.0), 16, 16), "constant"
    )
    np.testing.assert_allclose(shifted[:, :, 3:], images[:, :, :-3], atol=1e-3)
    assert float(tf.reduce_max(shifted[:, :, :3])) == 0.0
    # A fill value enters only where the source point leaves the image, in both interpolations.
    for interpolation in ("bilinear", "nearest"):
        filled = affine_transform(
            images,
            affine_matrices(*_params(4, shift_x=3.0), 16, 16),
            "constant",
            7.0,
            interpolation,
        )
        np.testing.assert_allclose(filled[:, :, :3], 7.0, atol=1e-3)
        np.testing.assert_allclose(filled[:, :, 3:], images[:, :, :-3], atol=1e-3)
    mirror = affine_matrices(*_params(4), 16, 16, flip_x=-tf.ones([4]))
    np.testing.assert_allclose(affine_transform(images, mirror), images[:, :, ::-1], atol=1e-3)


def test_random_affine_is_seeded_per_image_and_xla_compiles():
    images = _batch(batch=8)
    fn = tf.function(lambda x, s: random_affine(x, s, rotate=30, zoom=0.2), jit_compile=True)
    a, b = fn(images, SEED), fn(images, SEED)
    np.testing.assert_array_equal(a, b)
    assert float(tf.reduce_mean(tf.abs(a - images))) > 5.0
    # per-image parameters: two equal inputs get different outputs
    same = tf.repeat(images[:1], 2, axis=0)
    out = fn(same, SEED)
    assert float(tf.reduce_mean(tf.abs(out[0] - out[1]))) > 1.0


def test_random_affine_layer_is_active_only_in_training():
    layer = RandomAffine(rotate=20, shift=0.1, flip="horizontal", seed=0)
    images = _batch()
    np.testing.assert_array_equal(layer(images), images)
    assert float(tf.reduce_mean(tf.abs(layer(images, training=True) - images))) > 1.0
    assert RandomAffine.from_config(layer.get_config()).flip == "horizontal"
    with pytest.raises(ValueError, match="rotate must be >= 0"):
        RandomAffine(rotate=-3)


def test_mixup_cutmix_labels_sum_to_one_and_match_pixels():
    images = tf.concat([tf.zeros([4, 16, 16, 3]), tf.fill([4, 16, 16, 3], 255.0)], axis=0)
    labels = tf.one_hot([0] * 4 + [1] * 4, 2)
    for switch_prob in (0.0, 1.0):  # MixUp only, CutMix only
        mix = MixUpCutMix(mixup_alpha=0.4, cutmix_alpha=1.0, switch_prob=switch_prob)
        for step in range(5):
            out, mixed = mix(images, labels, tf.constant([step, 7], tf.int64))
            np.testing.assert_allclose(tf.reduce_sum(mixed, 1), 1.0, atol=1e-6)
            # the share of "class 1" equals the share of white pixels (CutMix area-corrected)
            np.testing.assert_allclose(
                mixed[:, 1], tf.reduce_mean(out, [1, 2, 3]) / 255.0, atol=1e-5
            )


def test_mixup_cutmix_smoothing_and_prob():
    labels = tf.one_hot([0, 1], 4)
    images = _batch(batch=2)
    mix = MixUpCutMix(prob=0.0, label_smoothing=0.2)
    out, smoothed = mix(images, labels, SEED)
    np.testing.assert_array_equal(out, images)
    np.testing.assert_allclose(smoothed[0], [0.85, 0.05, 0.05, 0.05], atol=1e-6)
    with pytest.raises(ValueError, match="switch_prob must be in"):
        MixUpCutMix(switch_prob=2.0)


def test_registry_resolves_own_and_keras_layers():
    pipeline = resolve_augmentations(
        [
            {"name": "RandomFlip", "mode": "horizontal"},
            {"name": "affine", "rotate": 10, "p": 0.5},
            {"name": "RandomContrast", "factor": 0.2},
            {"name": "MixUp", "alpha": 0.2},
            {"name": "CutMix", "p": 0.5},
            {"name": "mixup_cutmix"},
        ],
        seed=0,
    )
    assert [s.name for s in pipeline.per_sample] == ["RandomFlip", "affine", "RandomContrast"]
    assert [s.name for s in pipeline.per_batch] == ["MixUp", "CutMix", "mixup_cutmix"]
    images, labels = pipeline(_batch(batch=8), tf.one_hot(tf.range(8) % 3, 3), SEED)
    assert images.shape == (8, 16, 16, 3)
    np.testing.assert_allclose(tf.reduce_sum(labels, 1), 1.0, atol=1e-5)
    assert 0.0 <= float(tf.reduce_min(images)) and float(tf.reduce_max(images)) <= 255.0


def test_random_flip_before_an_affine_is_folded_into_its_resample():
    spec = [{"name": "RandomFlip", "mode": "horizontal"}, {"name": "affine", "shift": 0.0}]
    pipeline = resolve_augmentations(spec, seed=0)
    assert [s.name for s in pipeline.per_sample] == ["RandomFlip+affine"]
    images = _batch(batch=32)
    out = pipeline(images, tf.zeros([32, 2]), SEED)[0]
    # With an identity affine, each image is exactly itself or its mirror, and both occur.
    kept = np.abs(out - images).max(axis=(1, 2, 3)) < 1e-2
    mirrored = np.abs(out - images[:, :, ::-1]).max(axis=(1, 2, 3)) < 1e-2
    assert np.all(kept | mirrored)
    assert 8 <= mirrored.sum() <= 24
    # A flip that runs with p < 1 keeps its own step (folding would change the distribution).
    spec[0]["p"] = 0.5
    names = [s.name for s in resolve_augmentations(spec).per_sample]
    assert names == ["RandomFlip", "affine"]


def test_probability_zero_leaves_the_batch_alone():
    pipeline = resolve_augmentations([{"name": "affine", "rotate": 45, "p": 0.0}])
    images = _batch()
    np.testing.assert_array_equal(pipeline(images, tf.zeros([4, 2]), SEED)[0], images)


def test_unknown_name_and_bad_kwarg_are_clear():
    with pytest.raises(ValueError, match=r"Unknown augmentation 'RandomFlipp'.*'RandomFlip'"):
        resolve_augmentations([{"name": "RandomFlipp"}])
    with pytest.raises(
        ValueError,
        match=r"augment\[0\]: augmentation 'affine' has no argument "
        r"'rotation'; it accepts \[.*'rotate'",
    ):
        resolve_augmentations([{"name": "affine", "rotation": 10}])
    with pytest.raises(ValueError, match=r"'RandomFlip' has no argument 'axis'.*'mode'"):
        resolve_augmentations([{"name": "RandomFlip", "axis": 1}])
    with pytest.raises(ValueError, match="p must be a number in"):
        resolve_augmentations([{"name": "RandomFlip", "p": 1.5}])
    with pytest.raises(ValueError, match="use image_size / resize"):
        resolve_augmentations(["Resizing"])


def test_list_augmentations_in_resolution_order():
    names = list_augmentations(include_keras_cv=False)
    assert names[:4] == ["RandomAffine", "affine", "MixUpCutMix", "mixup_cutmix"]
    for name in ("RandomFlip", "RandAugment", "MixUp", "CutMix", "RandomErasing"):
        assert name in names
    assert "Resizing" not in names
