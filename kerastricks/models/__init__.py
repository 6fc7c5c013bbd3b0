"""tfimm backbones, a new head, layer groups, weights from local files, backbone profiling."""

from kerastricks.models.backbones import create_backbone, list_backbones
from kerastricks.models.groups import LayerGroup, freeze_groups, layer_groups, set_trainable
from kerastricks.models.head import HeadConfig, build_classifier, needs_fixed_size
from kerastricks.models.profile import profile_backbones
from kerastricks.models.weights import (
    load_backbone_weights,
    read_timm_state_dict,
    timm_state_dict,
)

__all__ = [
    "HeadConfig",
    "LayerGroup",
    "build_classifier",
    "create_backbone",
    "freeze_groups",
    "layer_groups",
    "list_backbones",
    "load_backbone_weights",
    "needs_fixed_size",
    "profile_backbones",
    "read_timm_state_dict",
    "set_trainable",
    "timm_state_dict",
]
