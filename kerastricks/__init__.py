"""kerastricks: the Kaggle image-classification trick stack for TensorFlow/Keras.

Example:
```python
import kerastricks as kt

config = kt.load_config("configs/digits.yaml")
model = kt.create_model("resnet18", num_classes=10, weights="resnet18.safetensors")
summary = kt.cross_validate(config)
```

Every name below is imported on first use: `import kerastricks.schedules` (or `.optim`,
`.callbacks`) loads TensorFlow only, never tfimm, which only the model builders need.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

from kerastricks._compat import ensure_legacy_keras

# Must run before anything imports TensorFlow: it selects the Keras 2 API (tf-keras).
ensure_legacy_keras()

__version__ = "0.1.0"

# name -> (module, attribute in it)
_EXPORTS = {
    "load_config": ("kerastricks.config", "load_config"),
    "create_model": ("kerastricks.models", "create_model"),
    "build_dataset": ("kerastricks.data", "build_dataset"),
    "fit_stages": ("kerastricks.fit", "fit_stages"),
    "fine_tune": ("kerastricks.fit", "fine_tune"),
    "cross_validate": ("kerastricks.eval.cv", "cross_validate"),
    "predict": ("kerastricks.eval.inference", "predict"),
    "lr_find": ("kerastricks.callbacks.lr_finder", "find_lr"),
    "list_backbones": ("kerastricks.models", "list_backbones"),
    "list_augmentations": ("kerastricks.data.augment", "list_augmentations"),
    "list_schedules": ("kerastricks.schedules", "list_schedules"),
    "list_optimizers": ("kerastricks.optim", "list_optimizers"),
}

__all__ = ["__version__", "train", *sorted(_EXPORTS)]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'kerastricks' has no attribute {name!r}")
    module, attribute = _EXPORTS[name]
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _TrainPackage(types.ModuleType):
    """`kerastricks.train`, the subpackage, callable as the `train` function it exports."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from kerastricks.train.runner import train

        return train(*args, **kwargs)


class _Package(types.ModuleType):
    # `kt.train` is the subpackage `kerastricks.train` (the import system sets that attribute
    # whenever any of its modules is imported), so it is made callable instead of shadowed:
    # `kt.train(config)` runs `kerastricks.train.runner.train`, `kt.train.stages` still works.
    @property
    def train(self) -> types.ModuleType:
        package = importlib.import_module("kerastricks.train")
        if type(package) is types.ModuleType:
            package.__class__ = _TrainPackage
        return package

    @train.setter
    def train(self, package: types.ModuleType) -> None:
        if type(package) is types.ModuleType:
            package.__class__ = _TrainPackage


sys.modules[__name__].__class__ = _Package
