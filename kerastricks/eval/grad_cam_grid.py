"""`kerastricks explain`: a Grad-CAM grid of a trained run's validation images."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from kerastricks.config import Config

if TYPE_CHECKING:
    from kerastricks.train.strategy import Hardware


def explain_run(
    config: Config,
    run_dir: str,
    out: str,
    max_images: int = 16,
    *,
    hardware: Hardware | None = None,
) -> str:
    """Writes a PNG grid of validation images with Grad-CAM overlays, confident mistakes
    first; uses the run's best weights and its last stage's image size. The model is built
    under `hardware`'s strategy (None: the current strategy)."""
    from kerastricks.data import build_dataset, resolve_records
    from kerastricks.eval.inference import final_image_size, fold_run_dirs, load_trained_model
    from kerastricks.explain import save_grad_cam_grid

    model_dir = fold_run_dirs(run_dir)[0]
    model, run_config = load_trained_model(model_dir, config.predict.weights, hardware=hardware)
    source = resolve_records(
        run_config.data.records, keys=run_config.data.keys, num_classes=run_config.data.num_classes
    )
    dataset = build_dataset(
        source,
        image_size=final_image_size(run_config),
        batch_size=max(max_images * 4, 64),
        training=False,
        folds=[run_config.data.val_fold],
        num_classes=source.num_classes,
    )
    images, labels = next(iter(dataset))
    save_grad_cam_grid(
        model,
        images.numpy(),
        np.argmax(labels.numpy(), axis=1),
        list(source.class_names),
        out,
        max_images=max_images,
    )
    return out
