"""The run configuration: schema (dataclasses), YAML loading, range and name validation
(no TensorFlow import), and the generated YAML reference."""

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
from kerastricks.config.validate import validate

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
    "validate",
]
