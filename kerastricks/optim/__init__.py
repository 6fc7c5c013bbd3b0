"""Optimizers and optimizer helpers: per-group LR multipliers, weight-decay exclusion,
a timm-style factory, gradient accumulation, and the tensorflow-addons optimizers Kaggle
notebooks relied on.
"""

from kerastricks.optim.accumulate import accumulate_gradients, accumulation_steps
from kerastricks.optim.factory import (
    create_optimizer,
    exclude_bias_and_norm_from_decay,
    list_optimizers,
)
from kerastricks.optim.lamb import LAMB
from kerastricks.optim.lookahead import Lookahead
from kerastricks.optim.multipliers import (
    get_lr_multipliers,
    set_lr_multipliers,
    with_lr_multipliers,
    with_lr_multipliers_by_name,
)
from kerastricks.optim.radam import RectifiedAdam
from kerastricks.optim.spread import spread_lrs

__all__ = [
    "LAMB",
    "Lookahead",
    "RectifiedAdam",
    "accumulate_gradients",
    "accumulation_steps",
    "create_optimizer",
    "exclude_bias_and_norm_from_decay",
    "get_lr_multipliers",
    "list_optimizers",
    "set_lr_multipliers",
    "spread_lrs",
    "with_lr_multipliers",
    "with_lr_multipliers_by_name",
]
