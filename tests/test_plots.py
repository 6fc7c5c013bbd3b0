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
