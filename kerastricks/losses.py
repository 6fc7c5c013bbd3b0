"""Losses, metrics and CV scores per target type: single-label, multi-label, regression.

The model always outputs float32 logits, so every loss and metric here reads logits
(`from_logits=True`, thresholds at 0 instead of 0.5). Labels are one-hot, multi-hot or
soft float vectors (MixUp, CutMix and pseudo-labels make them soft); every classification
loss accepts soft labels, and label smoothing is applied inside the loss (fastai/timm
semantics), so it composes with those soft labels.

Example:

```python
loss = make_loss("single_label", label_smoothing=0.1)
metrics = make_metrics("single_label", num_classes=10)
model.compile(optimizer="adam", loss=loss, metrics=metrics)
monitor, mode = monitor_for("single_label")  # ("val_accuracy", "max")
```
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Sequence

import numpy as np
import tensorflow as tf
from sklearn.metrics import roc_auc_score

from kerastricks.config.names import REGRESSION_LOSSES
from kerastricks.config.validate import check_choice
from tfrecords_tools.schema import TASKS

# The metric that picks the best checkpoint, and whether higher is better.
_MONITORS = {
    "single_label": ("val_accuracy", "max"),
    "multi_label": ("val_auc", "max"),
    "regression": ("val_rmse", "min"),
}


def _check_task(task: str) -> None:
    check_choice("task", task, TASKS)


def make_loss(
    task: str,
    label_smoothing: float = 0.0,
    focal_gamma: float | None = None,
    focal_alpha: float | Sequence[float] | None = None,
    regression: str = "mse",
) -> tf.keras.losses.Loss:
    """Builds the loss for a target type; the model's outputs are logits.

    - `single_label`: `CategoricalCrossentropy(from_logits=True)`; with `focal_gamma`,
      Keras' `CategoricalFocalCrossentropy` (Lin et al. 2017, softmax form).
    - `multi_label`: `BinaryCrossentropy(from_logits=True)`; with `focal_gamma`, Keras'
      `BinaryFocalCrossentropy`.
    - `regression`: mean squared error (`"mse"`), mean absolute error (`"mae"`) or Huber
      (`"huber"`, delta 1).

    Label smoothing follows fastai/timm for single-label targets
    (`y * (1 - s) + s / num_classes`) and Keras for multi-label ones (each target is moved
    towards 0.5: `y * (1 - s) + s / 2`); it is applied to soft labels too, and inside the
    focal losses before the focal factor.

    Example:

    >>> loss = make_loss("single_label", label_smoothing=0.1)
    >>> float(loss([[0.0, 1.0]], [[0.0, 0.0]]))  # log(2) whatever the smoothing
    0.693...

    Args:
        task: `"single_label"`, `"multi_label"` or `"regression"`.
        label_smoothing: in [0, 1); classification only (fastai/timm use 0.1).
        focal_gamma: the focusing parameter (2.0 in the paper); `None` for plain
            cross-entropy, 0 for cross-entropy with the `focal_alpha` weighting only.
        focal_alpha: class weighting of the focal loss; `None` turns it off. Multi-label:
            a float in [0, 1], the weight of positives (negatives get `1 - alpha`; 0.25 in
            the paper). Single-label: a float or one float per class, a multiplier on the
            loss (e.g. inverse class frequencies).
        regression: `"mse"`, `"mae"` or `"huber"`; regression only.

    Returns:
        A serialisable Keras `Loss`.

    Raises:
        ValueError: for an unknown task or regression loss, an option that does not
            apply to the task, or a value out of range; the message names it.
    """
    _check_task(task)
    if task == "regression":
        return _regression_loss(regression, label_smoothing, focal_gamma, focal_alpha)
    if regression != "mse":
        raise ValueError(
            f"regression={regression!r} applies to task='regression' only, not {task!r}; "
            "leave it at 'mse'."
        )
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1); received {label_smoothing!r}.")
    _check_focal(task, focal_gamma, focal_alpha)
    if task == "single_label":
        return _single_label_loss(label_smoothing, focal_gamma, focal_alpha)
    return _multi_label_loss(label_smoothing, focal_gamma, focal_alpha)


def _check_focal(task: str, gamma: float | None, alpha: float | Sequence[float] | None) -> None:
    if gamma is None:
        if alpha is not None:
            raise ValueError(
                f"focal_alpha={alpha!r} needs focal_gamma (the focal loss); set focal_gamma "
                "(e.g. 2.0) or leave focal_alpha unset."
            )
        return
    if not isinstance(gamma, numbers.Real) or gamma < 0:
        raise ValueError(f"focal_gamma must be a number >= 0; received {gamma!r}.")
    if task == "multi_label" and alpha is not None:
        if not isinstance(alpha, numbers.Real) or not 0.0 <= alpha <= 1.0:
            raise ValueError(
                f"focal_alpha for multi-label targets is the weight of positives, a float "
                f"in [0, 1]; received {alpha!r}."
            )
    if task == "single_label" and alpha is not None:
        values = np.atleast_1d(np.asarray(alpha, dtype=np.float64))
        if values.ndim != 1 or np.any(values < 0) or not np.all(np.isfinite(values)):
            raise ValueError(
                f"focal_alpha for single-label targets is a float or one float per class, "
                f"all >= 0; received {alpha!r}."
            )


def _single_label_loss(
    label_smoothing: float, gamma: float | None, alpha: float | Sequence[float] | None
) -> tf.keras.losses.Loss:
    if gamma is None:
        return tf.keras.losses.CategoricalCrossentropy(
            from_logits=True, label_smoothing=label_smoothing
        )
    # Keras' focal loss smooths the labels exactly like CategoricalCrossentropy and then
    # applies alpha * (1 - p)^gamma per class; alpha=1 turns the weighting off (its own
    # default, 0.25, comes from the binary paper setting and would just scale the loss).
    # It takes the log of clipped softmax probabilities (not log-softmax), so a logit gap
    # beyond ~16 saturates; float32 logits keep that far from ordinary training.
    weight = 1.0 if alpha is None else alpha
    if isinstance(weight, Sequence):
        weight = [float(a) for a in weight]
    return tf.keras.losses.CategoricalFocalCrossentropy(
        alpha=weight, gamma=float(gamma), from_logits=True, label_smoothing=label_smoothing
    )


def _multi_label_loss(
    label_smoothing: float, gamma: float | None, alpha: float | None
) -> tf.keras.losses.Loss:
    if gamma is None:
        return tf.keras.losses.BinaryCrossentropy(from_logits=True, label_smoothing=label_smoothing)
    return tf.keras.losses.BinaryFocalCrossentropy(
        apply_class_balancing=alpha is not None,
        alpha=0.25 if alpha is None else float(alpha),
        gamma=float(gamma),
        from_logits=True,
        label_smoothing=label_smoothing,
    )


def _regression_loss(
    name: str, label_smoothing: float, gamma: float | None, alpha: object
) -> tf.keras.losses.Loss:
    given = {"label_smoothing": label_smoothing or None, "focal_gamma": gamma, "focal_alpha": alpha}
    misplaced = [f"{key}={value!r}" for key, value in given.items() if value is not None]
    if misplaced:
        raise ValueError(
            f"{', '.join(misplaced)} apply to classification only, not task='regression'; "
            "set label_smoothing to 0 and leave the focal options unset."
        )
    losses = {
        "mse": tf.keras.losses.MeanSquaredError,
        "mae": tf.keras.losses.MeanAbsoluteError,
        "huber": tf.keras.losses.Huber,
    }
    check_choice("regression", name, REGRESSION_LOSSES)
    return losses[name]()


def make_metrics(task: str, num_classes: int) -> list[tf.keras.metrics.Metric]:
    """Builds the Keras metrics for a target type, reading logits.

    - `single_label`: `accuracy`, plus `top5_accuracy` when there are more than 5 classes.
    - `multi_label`: `auc` (macro ROC AUC over the labels, like scikit-learn's default)
      and `binary_accuracy` (a logit > 0 is a positive).
    - `regression`: `rmse` and `mae`.

    Build them inside the distribution strategy's scope, like the model.

    Example:

    >>> [m.name for m in make_metrics("multi_label", num_classes=4)]
    ['auc', 'binary_accuracy']

    Args:
        task: `"single_label"`, `"multi_label"` or `"regression"`.
        num_classes: number of classes (number of regression targets for regression).

    Returns:
        A list of new metric objects; the history keys are their names (`val_` prefixed
        for validation).
    """
    _check_task(task)
    minimum = 2 if task == "single_label" else 1
    if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral):
        raise ValueError(f"num_classes must be an int; received {num_classes!r}.")
    if num_classes < minimum:
        raise ValueError(f"num_classes must be >= {minimum} for {task!r}; received {num_classes}.")
    if task == "single_label":
        metrics = [tf.keras.metrics.CategoricalAccuracy(name="accuracy")]
        if num_classes > 5:
            metrics.append(tf.keras.metrics.TopKCategoricalAccuracy(k=5, name="top5_accuracy"))
        return metrics
    if task == "multi_label":
        # Validation labels are hard (MixUp/CutMix only touch training batches), which is
        # what BinaryAccuracy compares against; on soft training labels it under-counts.
        return [
            tf.keras.metrics.AUC(
                multi_label=True, num_labels=int(num_classes), from_logits=True, name="auc"
            ),
            tf.keras.metrics.BinaryAccuracy(threshold=0.0, name="binary_accuracy"),
        ]
    return [
        tf.keras.metrics.RootMeanSquaredError(name="rmse"),
        tf.keras.metrics.MeanAbsoluteError(name="mae"),
    ]


def monitor_for(task: str) -> tuple[str, str]:
    """The validation metric that selects the best checkpoint, and its mode.

    Example:

    >>> monitor_for("regression")
    ('val_rmse', 'min')

    Args:
        task: `"single_label"`, `"multi_label"` or `"regression"`.

    Returns:
        `(history key, "max" or "min")`, as `tf.keras.callbacks.ModelCheckpoint` takes them.
    """
    _check_task(task)
    return _MONITORS[task]


def score_predictions(
    task: str, targets: np.ndarray, probabilities: np.ndarray
) -> tuple[str, float]:
    """Scores out-of-fold predictions: the CV score (trust your CV).

    - `single_label`: accuracy of the argmax; targets are class indices `[N]` or
      one-hot/soft `[N, C]`.
    - `multi_label`: macro ROC AUC (scikit-learn) over the labels that have both positives
      and negatives in `targets` (a warning names the others); a target > 0.5 is positive.
    - `regression`: RMSE over every target.

    Example:

    >>> score_predictions("single_label", np.array([0, 1]), np.array([[0.9, 0.1], [0.8, 0.2]]))
    ('accuracy', 0.5)

    Args:
        task: `"single_label"`, `"multi_label"` or `"regression"`.
        targets: the true labels or values.
        probabilities: the predicted probabilities `[N, C]` (predicted values for
            regression, `[N]` or `[N, T]`).

    Returns:
        `(metric name, score)`; the name matches `make_metrics` (`accuracy`, `auc`, `rmse`).
    """
    _check_task(task)
    targets = np.asarray(targets, dtype=np.float64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if len(targets) != len(probabilities):
        raise ValueError(
            f"targets and probabilities must have the same number of rows; received "
            f"{len(targets)} and {len(probabilities)}."
        )
    if task == "regression":
        if targets.size != probabilities.size:
            raise ValueError(
                f"regression targets {targets.shape} and predictions {probabilities.shape} "
                "must hold the same number of values."
            )
        error = targets.reshape(len(targets), -1) - probabilities.reshape(len(targets), -1)
        return "rmse", float(np.sqrt(np.mean(error**2)))
    if probabilities.ndim != 2:
        raise ValueError(f"probabilities must be [N, C]; received shape {probabilities.shape}.")
    if task == "single_label":
        true = targets.astype(np.int64) if targets.ndim == 1 else targets.argmax(axis=1)
        return "accuracy", float(np.mean(true == probabilities.argmax(axis=1)))
    return "auc", _macro_auc(targets, probabilities)


def _macro_auc(targets: np.ndarray, probabilities: np.ndarray) -> float:
    if targets.shape != probabilities.shape:
        raise ValueError(
            f"multi-label targets {targets.shape} and probabilities {probabilities.shape} "
            "must have the same shape."
        )
    positive = targets > 0.5
    scored = positive.any(axis=0) & (~positive).any(axis=0)
    if not scored.any():
        raise ValueError(
            "ROC AUC is undefined: no label has both positives and negatives in targets."
        )
    if not scored.all():
        warnings.warn(
            f"Labels {np.flatnonzero(~scored).tolist()} have a single class in the targets "
            "and are left out of the macro AUC.",
            stacklevel=3,
        )
    return float(roc_auc_score(positive[:, scored], probabilities[:, scored], average="macro"))
