import kerastricks  # noqa: F401  (selects tf-keras before TensorFlow is imported)

# isort: split
import math

import numpy as np
import pytest
import tensorflow as tf

from kerastricks.losses import make_loss, make_metrics, monitor_for, score_predictions

LN2 = math.log(2.0)
# softmax([0, 0, ln 2]) = [1/4, 1/4, 1/2]: cross-entropies come out as multiples of ln 2.
QUARTER_LOGITS = [[0.0, 0.0, LN2]]


def _value(loss, y_true, y_pred) -> float:
    return float(loss(tf.constant(y_true, tf.float32), tf.constant(y_pred, tf.float32)))


def test_label_smoothing_matches_hand_computed_cross_entropy():
    # s=0.3, C=3: [1, 0, 0] -> [0.8, 0.1, 0.1]; CE = 0.9 ln 4 + 0.1 ln 2 = 1.9 ln 2.
    loss = make_loss("single_label", label_smoothing=0.3)
    assert _value(loss, [[1.0, 0.0, 0.0]], QUARTER_LOGITS) == pytest.approx(1.9 * LN2, rel=1e-6)
    plain = make_loss("single_label")
    assert _value(plain, [[1.0, 0.0, 0.0]], QUARTER_LOGITS) == pytest.approx(2 * LN2, rel=1e-6)


def test_soft_labels_are_accepted_by_single_and_multi_label_losses():
    # A MixUp label half class 0, half class 1: CE = 0.5 ln 4 + 0.5 ln 4 = ln 4.
    loss = make_loss("single_label")
    assert _value(loss, [[0.5, 0.5, 0.0]], QUARTER_LOGITS) == pytest.approx(2 * LN2, rel=1e-6)
    # BCE at logit 0 is ln 2 whatever the (soft) target.
    multi = make_loss("multi_label", label_smoothing=0.2)
    assert _value(multi, [[0.3, 0.9]], [[0.0, 0.0]]) == pytest.approx(LN2, rel=1e-6)


def test_multi_label_smoothing_moves_targets_towards_one_half():
    # s=0.2: target 1 -> 0.9; BCE(0.9, sigmoid(ln 9) = 0.9) = -(0.9 ln 0.9 + 0.1 ln 0.1).
    loss = make_loss("multi_label", label_smoothing=0.2)
    expected = -(0.9 * math.log(0.9) + 0.1 * math.log(0.1))
    assert _value(loss, [[1.0]], [[math.log(9.0)]]) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_focal_loss_with_gamma_zero_equals_cross_entropy(smoothing):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(8, 5)).astype(np.float32) * 3
    labels = rng.dirichlet(np.ones(5), size=8).astype(np.float32)
    focal = make_loss("single_label", label_smoothing=smoothing, focal_gamma=0.0)
    plain = make_loss("single_label", label_smoothing=smoothing)
    assert _value(focal, labels, logits) == pytest.approx(_value(plain, labels, logits), rel=1e-5)


def test_focal_loss_shrinks_easy_examples_far_more_than_hard_ones():
    focal = make_loss("single_label", focal_gamma=2.0)
    plain = make_loss("single_label")
    easy = [[math.log(9.0), 0.0]]  # p(class 0) = 0.9
    label = [[1.0, 0.0]]
    # (1 - 0.9)^2 * -ln 0.9
    assert _value(focal, label, easy) == pytest.approx(0.01 * -math.log(0.9), rel=1e-5)
    assert _value(plain, label, easy) == pytest.approx(-math.log(0.9), rel=1e-5)
    hard_label = [[0.0, 1.0]]  # p(class 1) = 0.1: (1 - 0.1)^2 * -ln 0.1
    assert _value(focal, hard_label, easy) == pytest.approx(0.81 * math.log(10.0), rel=1e-5)


def test_focal_loss_composes_with_label_smoothing():
    # s=0.2, C=2: [1, 0] -> [0.9, 0.1]; p = [0.9, 0.1]; sum_c y_c (1 - p_c)^2 (-ln p_c).
    loss = make_loss("single_label", focal_gamma=2.0, label_smoothing=0.2)
    expected = 0.9 * 0.01 * -math.log(0.9) + 0.1 * 0.81 * -math.log(0.1)
    assert _value(loss, [[1.0, 0.0]], [[math.log(9.0), 0.0]]) == pytest.approx(expected, rel=1e-5)


def test_single_label_focal_alpha_weights_each_class():
    loss = make_loss("single_label", focal_gamma=0.0, focal_alpha=[2.0, 1.0])
    logits = [[math.log(9.0), 0.0]]
    assert _value(loss, [[1.0, 0.0]], logits) == pytest.approx(-2 * math.log(0.9), rel=1e-5)
    assert _value(loss, [[0.0, 1.0]], logits) == pytest.approx(math.log(10.0), rel=1e-5)


def _binary_focal_reference(y, z, gamma, alpha, smoothing):
    y = np.asarray(y, np.float64) * (1 - smoothing) + 0.5 * smoothing
    p = 1 / (1 + np.exp(-np.asarray(z, np.float64)))
    p_t = y * p + (1 - y) * (1 - p)
    bce = -(y * np.log(p) + (1 - y) * np.log(1 - p))
    weight = y * alpha + (1 - y) * (1 - alpha)
    return float(np.mean(weight * (1 - p_t) ** gamma * bce))


def test_multi_label_focal_loss_matches_the_formula_keras_documents():
    rng = np.random.default_rng(1)
    labels = (rng.random((6, 4)) > 0.5).astype(np.float32)
    logits = rng.normal(size=(6, 4)).astype(np.float32) * 2
    loss = make_loss("multi_label", focal_gamma=2.0, focal_alpha=0.25, label_smoothing=0.1)
    assert isinstance(loss, tf.keras.losses.BinaryFocalCrossentropy)
    expected = _binary_focal_reference(labels, logits, 2.0, 0.25, 0.1)
    assert _value(loss, labels, logits) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize(
    ("name", "expected"),
    [("mse", (0.25 + 4.0) / 2), ("mae", (0.5 + 2.0) / 2), ("huber", (0.125 + 1.5) / 2)],
)
def test_regression_losses(name, expected):
    loss = make_loss("regression", regression=name)
    assert _value(loss, [[1.0], [0.0]], [[1.5], [2.0]]) == pytest.approx(expected, rel=1e-6)


LOSS_OPTIONS = [
    ("single_label", {"label_smoothing": 0.1}),
    ("single_label", {"label_smoothing": 0.1, "focal_gamma": 2.0, "focal_alpha": [1.0, 2.0, 1.0]}),
    ("multi_label", {"label_smoothing": 0.1}),
    ("multi_label", {"focal_gamma": 2.0, "focal_alpha": 0.25}),
    ("regression", {"regression": "huber"}),
]


@pytest.mark.parametrize(("task", "options"), LOSS_OPTIONS)
def test_losses_compile_with_xla_and_round_trip_through_config(task, options):
    loss = make_loss(task, **options)
    labels = tf.constant([[0.0, 1.0, 0.0], [0.2, 0.8, 0.0]])
    logits = tf.constant([[1.0, -2.0, 0.5], [0.3, 2.0, -1.0]])
    compiled = tf.function(loss.__call__, jit_compile=True)
    eager = float(loss(labels, logits))
    assert float(compiled(labels, logits)) == pytest.approx(eager, rel=1e-5)
    restored = tf.keras.losses.deserialize(tf.keras.losses.serialize(loss))
    assert float(restored(labels, logits)) == pytest.approx(eager, rel=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"task": "single_lable"}, "did you mean 'single_label'"),
        ({"task": "regression", "regression": "rmse"}, "did you mean 'mse'"),
        ({"task": "regression", "label_smoothing": 0.1}, "label_smoothing=0.1"),
        ({"task": "regression", "focal_gamma": 2.0}, "focal_gamma=2.0"),
        ({"task": "single_label", "label_smoothing": 1.0}, "label_smoothing must be in"),
        ({"task": "single_label", "focal_alpha": 0.25}, "focal_alpha=0.25 needs focal_gamma"),
        ({"task": "multi_label", "focal_gamma": -1.0}, "focal_gamma must be"),
        ({"task": "multi_label", "focal_gamma": 2.0, "focal_alpha": 2.0}, "received 2.0"),
        ({"task": "single_label", "regression": "mae"}, "regression='mae'"),
    ],
)
def test_make_loss_rejects_bad_options_naming_them(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        make_loss(**kwargs)


def test_metric_names_per_task():
    assert [m.name for m in make_metrics("single_label", 5)] == ["accuracy"]
    assert [m.name for m in make_metrics("single_label", 10)] == ["accuracy", "top5_accuracy"]
    assert [m.name for m in make_metrics("multi_label", 3)] == ["auc", "binary_accuracy"]
    assert [m.name for m in make_metrics("regression", 1)] == ["rmse", "mae"]
    with pytest.raises(ValueError, match="num_classes must be >= 2"):
        make_metrics("single_label", 1)


def test_monitor_for_each_task_is_a_metric_that_make_metrics_logs():
    expected = {
        "single_label": ("val_accuracy", "max"),
        "multi_label": ("val_auc", "max"),
        "regression": ("val_rmse", "min"),
    }
    for task, monitor in expected.items():
        assert monitor_for(task) == monitor
        names = [m.name for m in make_metrics(task, 3)]
        assert monitor[0].removeprefix("val_") in names
    with pytest.raises(ValueError, match="task: unknown value"):
        monitor_for("ranking")


def test_multi_label_metrics_read_logits_inside_xla():
    auc, accuracy = make_metrics("multi_label", 2)
    labels = tf.constant([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    # Each label perfectly ranked; every logit within 0.1 of 0, where a 0.5 threshold would
    # call them all negatives.
    logits = tf.constant([[-0.1, 0.1], [0.05, -0.05], [0.1, 0.05], [-0.05, -0.1]])

    @tf.function(jit_compile=True)
    def update(y, z):
        auc.update_state(y, z)
        accuracy.update_state(y, z)

    update(labels, logits)
    assert float(auc.result()) == pytest.approx(1.0, abs=1e-3)
    assert float(accuracy.result()) == 1.0


def test_single_label_metrics_count_top1_and_top5():
    accuracy, top5 = make_metrics("single_label", 8)
    labels = tf.one_hot([0, 7], 8)
    logits = tf.constant([[8.0, 7, 6, 5, 4, 3, 2, 1], [8.0, 7, 6, 5, 4, 3, 2, 1]])
    for metric in (accuracy, top5):
        metric.update_state(labels, logits)
    assert float(accuracy.result()) == 0.5
    assert float(top5.result()) == 0.5


def test_score_predictions_values():
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    assert score_predictions("single_label", [0, 1, 1, 1], probs) == ("accuracy", 0.75)
    one_hot = np.eye(2)[[0, 1, 1, 1]]
    assert score_predictions("single_label", one_hot, probs) == ("accuracy", 0.75)
    # Label 0 ranks its positives {0, 2} above {1, 3}: AUC 1. Label 1 positives {1, 2}:
    # pairs (1>0, 1>3, 2>0, 2<3) -> 0.75. Macro mean 0.875.
    multi = np.array([[1, 0], [0, 1], [1, 1], [0, 0]])
    assert score_predictions("multi_label", multi, probs) == ("auc", pytest.approx(0.875))
    name, rmse = score_predictions("regression", [1.0, 2.0], np.array([[1.0], [4.0]]))
    assert (name, rmse) == ("rmse", pytest.approx(math.sqrt(2.0)))


def test_score_predictions_leaves_out_single_class_labels_with_a_warning():
    targets = np.array([[1, 0], [0, 0], [1, 0]])
    probs = np.array([[0.9, 0.5], [0.1, 0.5], [0.8, 0.5]])
    with pytest.warns(UserWarning, match=r"Labels \[1\]"):
        assert score_predictions("multi_label", targets, probs) == ("auc", 1.0)
    with pytest.raises(ValueError, match="same number of rows"):
        score_predictions("single_label", [0, 1, 1], probs[:2])


def _tfa_sigmoid_focal(y_true, y_pred, alpha=0.25, gamma=2.0, from_logits=False):
    """tfa's `sigmoid_focal_crossentropy` in numpy, line for line from tensorflow/addons
    tensorflow_addons/losses/focal_loss.py (commit 97ba909, the last before end-of-life):
    ce = K.binary_crossentropy (probabilities clipped to [1e-7, 1 - 1e-7], +1e-7 in the
    logs), p_t = y p + (1 - y)(1 - p), alpha_factor = y a + (1 - y)(1 - a) only `if alpha`,
    modulating = (1 - p_t)^gamma only `if gamma`, then reduce_sum over the last axis."""
    y = np.asarray(y_true, np.float64)
    x = np.asarray(y_pred, np.float64)
    if from_logits:
        ce = np.maximum(x, 0) - x * y + np.log1p(np.exp(-np.abs(x)))
        p = 1.0 / (1.0 + np.exp(-x))
    else:
        p = x
        clipped = np.clip(p, 1e-7, 1 - 1e-7)
        ce = -(y * np.log(clipped + 1e-7) + (1 - y) * np.log(1 - clipped + 1e-7))
    p_t = y * p + (1 - y) * (1 - p)
    alpha_factor = y * alpha + (1 - y) * (1 - alpha) if alpha else 1.0
    modulating = (1.0 - p_t) ** gamma if gamma else 1.0
    return np.sum(alpha_factor * modulating * ce, axis=-1)


def test_tfa_focal_reference_reproduces_tfa_documented_example():
    # The Usage block of tfa's SigmoidFocalCrossEntropy docstring (same file and commit).
    got = _tfa_sigmoid_focal([[1.0], [1.0], [0.0]], [[0.97], [0.91], [0.03]])
    np.testing.assert_allclose(got, [6.8532745e-06, 1.9097870e-04, 2.0559824e-05], rtol=1e-5)


@pytest.mark.parametrize("from_logits", [False, True], ids=["probabilities", "logits"])
@pytest.mark.parametrize("alpha", [0.25, 0.6, None])
def test_readme_recipe_gives_tfa_sigmoid_focal_values(alpha, from_logits):
    # README, "Moving from tensorflow-addons": num_labels * Keras' BinaryFocalCrossentropy
    # with apply_class_balancing=(alpha given) and reduction="none".
    rng = np.random.default_rng(0)
    labels = (rng.random((6, 4)) < 0.4).astype("float32")
    logits = rng.normal(size=(6, 4)).astype("float32") * 2.0
    y_pred = logits if from_logits else 1.0 / (1.0 + np.exp(-logits))
    want = _tfa_sigmoid_focal(labels, y_pred, alpha=alpha, gamma=1.5, from_logits=from_logits)
    keras_loss = tf.keras.losses.BinaryFocalCrossentropy(
        apply_class_balancing=alpha is not None,
        alpha=0.25 if alpha is None else alpha,
        gamma=1.5,
        from_logits=from_logits,
        reduction="none",
    )
    got = labels.shape[-1] * keras_loss(labels, y_pred).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    # Keras' defaults alone (no class balancing, a mean over labels) are not tfa's numbers.
    plain = tf.keras.losses.BinaryFocalCrossentropy(gamma=1.5, from_logits=from_logits)
    assert abs(float(plain(labels, y_pred)) - want.mean()) > 0.1 * want.mean()
    # `train.loss: focal` (multi-label) is tfa's per-sample value / num_labels, batch mean.
    if from_logits:
        ours = make_loss("multi_label", focal_gamma=1.5, focal_alpha=alpha)
        assert _value(ours, labels, logits) == pytest.approx(want.mean() / 4, rel=1e-5)
