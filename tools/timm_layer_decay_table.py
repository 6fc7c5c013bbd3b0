"""Prints timm's own layer-decay LR scales, per parameter, as JSON (the test reference).

Runs in an environment with timm and torch (not kerastricks's: the project needs neither).
For each model, timm's `param_groups_layer_decay` is called on the real timm model, and every
parameter's `lr_scale` is written under its timm name; tests/models/test_layer_decay_timm.py
compares `kerastricks.models.layer_decay_multipliers` with these numbers.

Regenerate (timm 1.0.31, CPU torch, in a throwaway virtual environment)::

    python tools/timm_layer_decay_table.py > tests/models/data/timm_layer_decay_1.0.31.json
"""

from __future__ import annotations

import json
import sys

import timm
import torch
from timm.optim import param_groups_layer_decay

LAYER_DECAY = 0.75

# Example model of each family in docs/layer_groups.md whose timm class has a group_matcher
# (pit, poolformer and pvt have none in timm: timm falls back to chunks of 12 parameters).
MODELS = (
    "resnet18",
    "vit_tiny_patch16_224",
    "efficientnet_b0",
    "convnext_tiny",
    "resnetv2_50x1_bitm",
    "vgg11_bn",
    "vit_tiny_r_s16_p8_224",
    "cait_xxs24_224",
    "swin_tiny_patch4_window7_224",
    "pvt_v2_b0",
    "mixer_s16_224",
    "convmixer_768_32",
)


def lr_scales(name: str, layer_decay: float) -> dict:
    """timm's lr_scale of every parameter of `name`, and its classifier prefix."""
    model = timm.create_model(name, pretrained=False)
    names = {id(param): param_name for param_name, param in model.named_parameters()}
    groups = param_groups_layer_decay(model, weight_decay=0.05, layer_decay=layer_decay)
    scales = {}
    for group in groups:
        for param in group["params"]:
            scales[names[id(param)]] = group["lr_scale"]
    ordered = {param_name: scales[param_name] for param_name, _ in model.named_parameters()}
    return {"classifier": model.pretrained_cfg.get("classifier"), "lr_scale": ordered}


def main() -> None:
    table = {
        "timm_version": timm.__version__,
        "torch_version": torch.__version__,
        "layer_decay": LAYER_DECAY,
        "models": {name: lr_scales(name, LAYER_DECAY) for name in MODELS},
    }
    json.dump(table, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
