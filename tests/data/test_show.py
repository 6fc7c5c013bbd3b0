import kerastricks  # noqa: F401  (selects tf-keras before TensorFlow is imported)

# isort: split
import numpy as np
from PIL import Image

from kerastricks.data import save_batch_grid, show_batch
from kerastricks.data.show import _title


def test_titles_show_class_or_top_class_with_weight():
    assert _title(np.array([0.0, 1.0, 0.0]), ["cat", "dog", "eel"]) == "dog"
    assert _title(np.array([0.0, 1.0]), []) == "1"
    # Multi-hot: every positive class.
    assert _title(np.array([1.0, 0.0, 1.0]), ["cat", "dog", "eel"]) == "cat, eel"


def test_titles_of_mixed_images_name_both_classes():
    names = [str(i) for i in range(10)]
    mixed = np.zeros(10)
    mixed[[3, 7]] = [0.6, 0.4]
    assert _title(mixed, names) == "3 0.60 / 7 0.40"
    assert _title(np.array([0.3, 0.0, 0.7]), ["cat", "dog", "eel"]) == "eel 0.70 / cat 0.30"
    # Label smoothing alone (0.1 over 10 classes) names only the class.
    smoothed = np.full(10, 0.01)
    smoothed[4] = 0.91
    assert _title(smoothed, names) == "4 0.91"
    # A mix with label smoothing: both classes, the floor left out.
    assert _title(mixed * 0.9 + 0.01, names) == "3 0.55 / 7 0.37"


def test_save_batch_grid_writes_a_png_atomically(tmp_path):
    images = np.random.default_rng(0).uniform(0, 255, (10, 16, 16, 3)).astype(np.float32)
    labels = np.eye(2)[np.arange(10) % 2]
    path = save_batch_grid(images, labels, ["a", "b"], str(tmp_path / "grid.png"), max_images=9)
    with Image.open(path) as png:
        width, height = png.size
    # 9 images: 8 columns of 200 px, 2 rows of 220 px at dpi 100
    assert (width, height) == (1600, 440)
    assert [p.name for p in tmp_path.iterdir()] == ["grid.png"]


def test_show_batch_draws_the_augmented_training_batch(records, tmp_path):
    augment = [{"name": "affine", "rotate": 20}, {"name": "MixUp"}]
    path = show_batch(records, 24, augment, str(tmp_path / "batch.png"), batch_size=6)
    with Image.open(path) as png:
        assert png.size == (1200, 220)  # 6 images in one row
        assert np.asarray(png.convert("L")).std() > 10.0


def test_batch_grid_leaves_the_notebooks_matplotlib_backend_alone(tmp_path, monkeypatch):
    import matplotlib

    def switch_backend(*args, **kwargs):
        raise AssertionError("matplotlib.use switches a notebook's backend for the session")

    monkeypatch.setattr(matplotlib, "use", switch_backend)
    images = np.zeros((2, 8, 8, 3), "float32")
    path = save_batch_grid(images, np.eye(2, dtype="float32"), ["a", "b"], str(tmp_path / "g.png"))
    assert Image.open(path).format == "PNG"
