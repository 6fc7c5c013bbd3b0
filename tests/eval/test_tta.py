"""TTA: fastai's blend arithmetic and the named transforms."""

import json

import numpy as np
import pytest
import tensorflow as tf

import kerastricks  # noqa: F401
from kerastricks.eval.tta import blend_tta, get_tta_transform, predict_tta, to_probabilities


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


def _softmax(logits):
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def test_predict_tta_blends_the_probabilities_of_each_pass_as_fastai():
    # Logits = flatten(image) @ kernel + bias: a known function that hflip and vflip change.
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, (7, 2, 4, 3)).astype(np.float32)
    kernel = rng.normal(0, 2, (2 * 4 * 3, 3)).astype(np.float32)
    bias = np.array([0.1, -0.2, 0.3], np.float32)
    model = tf.keras.Sequential(
        [tf.keras.layers.Input((2, 4, 3)), tf.keras.layers.Flatten(), tf.keras.layers.Dense(3)]
    )
    model.layers[-1].set_weights([kernel, bias])
    ids = np.array([f"r{i}" for i in range(7)])
    dataset = tf.data.Dataset.from_tensor_slices((images, np.eye(3)[rng.integers(0, 3, 7)], ids))

    def probabilities(batch):
        return _softmax(batch.reshape(len(batch), -1) @ kernel + bias)

    plain = probabilities(images)
    hflip = probabilities(images[:, :, ::-1])
    vflip = probabilities(images[:, ::-1])
    assert np.abs(hflip - plain).max() > 0.05  # the flips do change the predictions
    result = predict_tta(model, dataset.batch(3), ["hflip"], "single_label", 0.25)
    assert result["ids"].tolist() == ids.tolist()
    np.testing.assert_allclose(result["plain"], plain, atol=1e-5)
    np.testing.assert_allclose(result["tta"], 0.75 * hflip + 0.25 * plain, atol=1e-5)
    both = predict_tta(model, dataset.batch(4), ["hflip", "vflip"], "single_label", 0.4)
    np.testing.assert_allclose(both["tta"], 0.6 * (hflip + vflip) / 2 + 0.4 * plain, atol=1e-5)
    mean = predict_tta(model, dataset.batch(4), ["hflip", "vflip"], "single_label", None)
    np.testing.assert_allclose(mean["tta"], (plain + hflip + vflip) / 3, atol=1e-5)


def _write_fold_runs(run_dir, config, heads):
    """Fold run folders (config, summary, best weights) whose head is `(kernel, bias)`."""
    from kerastricks.config.load import save_config
    from kerastricks.models.head import HEAD_PREFIX
    from kerastricks.train.build import build_model

    for fold, (kernel, bias) in enumerate(heads):
        fold_dir = run_dir / f"fold{fold}"
        (fold_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        save_config(config, str(fold_dir / "config.yaml"))
        summary = {"task": "single_label", "num_classes": 10, "class_names": list("0123456789")}
        (fold_dir / "summary.json").write_text(json.dumps(summary))
        tf.keras.utils.set_random_seed(fold)
        model = build_model(config, 10, 32)
        head = model.get_layer(HEAD_PREFIX + "logits")
        kernel = np.zeros(head.kernel.shape) if kernel is None else kernel(head.kernel.shape)
        head.set_weights([kernel.astype(np.float32), bias.astype(np.float32)])
        model.save_weights(str(fold_dir / "checkpoints" / "best.weights.h5"))
        tf.keras.backend.clear_session()


def test_ensemble_predict_averages_the_fold_models_probabilities(
    make_config, digits_records, tmp_path
):
    from kerastricks.eval.inference import ensemble_predict, load_trained_model, predict_records

    config = make_config(tta={"transforms": ["hflip"], "beta": 0.25})
    records = f"{digits_records}/train-f0-*.tfrec"  # fold 0: 80 records
    # Two fold models whose logits are their head bias alone (zero kernel): each predicts
    # softmax(bias) for every image, so the ensemble is the mean of two known rows.
    biases = [np.linspace(-1.0, 2.0, 10), np.array([3.0] + [0.0] * 9)]
    _write_fold_runs(tmp_path / "const", config, [(None, b) for b in biases])
    result = ensemble_predict(str(tmp_path / "const"), records)
    assert result["models"] == 2 and len(result["ids"]) == 80
    expected = (_softmax(biases[0][None]) + _softmax(biases[1][None])) / 2
    # The mean of probabilities, not the softmax of the mean logits:
    assert np.abs(expected - _softmax((biases[0] + biases[1])[None] / 2)).max() > 0.05
    np.testing.assert_allclose(result["plain"], np.repeat(expected, 80, axis=0), atol=1e-5)
    np.testing.assert_allclose(result["tta"], np.repeat(expected, 80, axis=0), atol=1e-5)

    # With image-dependent heads, the TTA columns are the mean of each fold's TTA blend.
    rng = np.random.default_rng(0)
    heads = [(lambda shape: rng.normal(0, 0.5, shape), b) for b in biases]
    _write_fold_runs(tmp_path / "real", config, heads)
    result = ensemble_predict(str(tmp_path / "real"), records)
    folds = []
    for fold in range(2):
        model, fold_config = load_trained_model(str(tmp_path / "real" / f"fold{fold}"))
        folds.append(predict_records(model, fold_config, records, "single_label"))
        tf.keras.backend.clear_session()
    assert np.abs(folds[0]["tta"] - folds[0]["plain"]).max() > 1e-3  # the flip matters
    assert np.abs(folds[0]["plain"] - folds[1]["plain"]).max() > 0.05
    for key in ("plain", "tta"):
        mean = (folds[0][key] + folds[1][key]) / 2
        np.testing.assert_allclose(result[key], mean, atol=1e-5)
