"""The run configuration: schema (dataclasses), YAML loading with validation, and the
generated YAML reference."""

from kerastricks.config.load import (
    ConfigError,
    from_dict,
    load_config,
    save_config,
    to_dict,
)
from kerastricks.config.schema import (
    Config,
    CVConfig,
    DataConfig,
    HeadConfig,
    ModelConfig,
    OptimizerConfig,
    PredictConfig,
    PseudoConfig,
    RecipeConfig,
    StageConfig,
    TrainConfig,
    TTAConfig,
)

__all__ = [
    "CVConfig",
    "Config",
    "ConfigError",
    "DataConfig",
    "HeadConfig",
    "ModelConfig",
    "OptimizerConfig",
    "PredictConfig",
    "PseudoConfig",
    "RecipeConfig",
    "StageConfig",
    "TTAConfig",
    "TrainConfig",
    "from_dict",
    "load_config",
    "save_config",
    "to_dict",
]
