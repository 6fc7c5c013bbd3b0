"""Strategy and precision names: refused through the config's one choice check."""

import pytest

from kerastricks.config import ConfigError
from kerastricks.train.strategy import detect_hardware, resolve_precision


def test_unknown_names_get_the_config_message():
    with pytest.raises(ConfigError, match=r"train.precision: unknown value 'float8'.*Choose one"):
        resolve_precision("float8", "cpu")
    with pytest.raises(ConfigError, match=r"train.strategy: unknown value 'mirored'; did you mean"):
        detect_hardware("mirored")
    assert resolve_precision("auto", "gpu") == "mixed_float16"
