"""tfimm backbones, a new head, layer groups, weights from local files, backbone profiling.

Names are imported on first use, so that `kerastricks.models.groups` (layer groups and
freezing, which `kerastricks.callbacks` uses) loads without tfimm; the model builders check
for tfimm when they are imported.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "HeadConfig": "kerastricks.models.head",
    "LayerGroup": "kerastricks.models.groups",
    "build_classifier": "kerastricks.models.head",
    "create_backbone": "kerastricks.models.backbones",
    "create_model": "kerastricks.models.head",
    "freeze_groups": "kerastricks.models.groups",
    "layer_groups": "kerastricks.models.groups",
    "list_backbones": "kerastricks.models.backbones",
    "load_backbone_weights": "kerastricks.models.weights",
    "needs_fixed_size": "kerastricks.models.head",
    "profile_backbones": "kerastricks.models.profile",
    "read_timm_state_dict": "kerastricks.models.weights",
    "set_trainable": "kerastricks.models.groups",
    "timm_state_dict": "kerastricks.models.weights",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'kerastricks.models' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
