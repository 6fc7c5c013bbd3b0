"""PNG helpers: files are real PNGs, written atomically, values drawn are the schedule's."""

import kerastricks  # noqa: F401  (selects tf-keras before TensorFlow is imported)

# isort: split
import numpy as np
import pytest
import tensorflow as tf

from kerastricks.plots import plot_lr_finder, plot_schedule, schedule_values
from kerastricks.schedules import OneCycle

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_plot_schedule_writes_a_png(tmp_path):
    path = str(tmp_path / "plots" / "schedule.png")
    assert plot_schedule(OneCycle(1e-3, 50), 50, path) == path
    data = (tmp_path / "plots" / "schedule.png").read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 5000
    assert [p.name for p in (tmp_path / "plots").iterdir()] == ["schedule.png"]  # no temp left


def test_schedule_values_vectorised_and_scalar_only():
    np.testing.assert_allclose(schedule_values(OneCycle(1.0, 10), 3), [0.04, 0.52, 1.0], rtol=1e-6)
    piecewise = tf.keras.optimizers.schedules.PiecewiseConstantDecay([2], [1.0, 0.5])
    np.testing.assert_array_equal(schedule_values(piecewise, 4), [1.0, 1.0, 1.0, 0.5])
    assert schedule_values(lambda step: 2.0 * step, 3).tolist() == [0.0, 2.0, 4.0]


def test_plot_lr_finder_marks_suggestions(tmp_path):
    lrs = np.logspace(-7, 1, 60)
    losses = (np.log10(lrs) + 2.0) ** 2
    path = str(tmp_path / "lr.png")
    plot_lr_finder(lrs, losses, path, {"valley": 1e-3, "minimum": 1e-3, "bad": float("nan")})
    assert (tmp_path / "lr.png").read_bytes().startswith(PNG_MAGIC)
    with pytest.raises(ValueError, match="3 lrs and 2 losses"):
        plot_lr_finder([1, 2, 3], [1, 2], path)


def _history():
    # Two stages of two epochs: 32 px then 64 px.
    rows = []
    for epoch in range(4):
        stage = epoch // 2
        rows.append(
            {
                "epoch": epoch,
                "stage": stage,
                "stage_name": ["frozen", "unfrozen"][stage],
                "image_size": [32, 64][stage],
                "lr": 0.1,
                "loss": 1.0 / (epoch + 1),
                "val_loss": 1.2 / (epoch + 1),
                "accuracy": 0.2 * epoch,
                "val_accuracy": 0.2 * epoch,
            }
        )
    return rows


def _plans():
    from types import SimpleNamespace

    # 3 steps per epoch in stage 0 (steps 0-5), 5 per epoch in stage 1 (steps 6-15).
    return [
        SimpleNamespace(first_step=0, first_epoch=0, steps_per_epoch=3, total_steps=6),
        SimpleNamespace(first_step=6, first_epoch=2, steps_per_epoch=5, total_steps=10),
    ]


def test_stage_marks_name_each_stage_and_its_size_at_its_first_epoch():
    from kerastricks.plots import stage_marks

    assert stage_marks(_history()) == [(0.5, "frozen, 32px"), (2.5, "unfrozen, 64px")]
    assert stage_marks([{"epoch": 0, "stage": 0}]) == [(0.5, "stage1")]


def test_lr_per_step_puts_each_epochs_last_step_on_its_epoch_point():
    from kerastricks.plots import lr_per_step

    x, lr = lr_per_step(lambda step: 0.01 * step, _plans())
    np.testing.assert_allclose(lr, 0.01 * np.arange(16))
    # Epoch 1 ends at step 2 (x=1), epoch 2 at step 5 (x=2), epoch 4 at step 15 (x=4).
    np.testing.assert_allclose(x[[0, 2, 5, 6, 10, 15]], [1 / 3, 1, 2, 2.2, 3, 4])


def test_curves_figure_labels_stages_and_draws_the_lr_of_every_step():
    from kerastricks.plots import curves_figure

    schedule = OneCycle(1e-3, 16)
    figure = curves_figure(_history(), "accuracy", schedule, _plans())
    loss_axis, metric_axis, lr_axis = figure.axes
    for axis in (loss_axis, metric_axis, lr_axis):
        labels = [text.get_text().strip() for text in axis.texts]
        assert labels == ["frozen, 32px", "unfrozen, 64px"]
        boundaries = [line.get_xdata()[0] for line in axis.lines if line.get_linestyle() == "--"]
        assert boundaries == [2.5]
    (curve,) = [line for line in lr_axis.lines if line.get_linestyle() != "--"]
    np.testing.assert_allclose(curve.get_ydata(), schedule_values(schedule, 16), rtol=1e-6)
    assert lr_axis.get_yscale() == "linear"
    # Without the schedule the LR panel falls back to the history's end-of-epoch values.
    fallback = curves_figure(_history(), "accuracy").axes[2]
    assert [len(line.get_xdata()) for line in fallback.lines if line.get_linestyle() != "--"] == [4]
    assert curves_figure([], "accuracy") is None


def test_save_curves_writes_a_png(tmp_path):
    from kerastricks.plots import save_curves

    path = str(tmp_path / "plots" / "curves.png")
    save_curves(_history(), "accuracy", path, OneCycle(1e-3, 16), _plans())
    assert (tmp_path / "plots" / "curves.png").read_bytes().startswith(PNG_MAGIC)
