"""Evaluation: k-fold CV with OOF predictions, TTA, prediction files and Grad-CAM grids."""

from kerastricks.eval.cv import cross_validate, score_oof
from kerastricks.eval.grad_cam_grid import explain_run
from kerastricks.eval.inference import ensemble_predict, predict
from kerastricks.eval.tta import blend_tta, get_tta_transform, list_tta_transforms

__all__ = [
    "blend_tta",
    "cross_validate",
    "ensemble_predict",
    "explain_run",
    "get_tta_transform",
    "list_tta_transforms",
    "predict",
    "score_oof",
]
