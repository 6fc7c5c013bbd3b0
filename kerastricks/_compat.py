"""Keras 2 guard: kerastricks runs on `tf-keras` (Keras 2 API) and tfimm.

tfimm models are Keras 2 code; under Keras 3 they fail to build. Setting
``TF_USE_LEGACY_KERAS=1`` before TensorFlow is imported makes ``tf.keras`` resolve to
``tf_keras``. This module sets it, and refuses to continue when TensorFlow was already
imported with Keras 3 behind ``tf.keras``.
"""

from __future__ import annotations

import importlib.util
import os
import sys

TFIMM_INSTALL = "pip install --no-deps --ignore-requires-python tfimm==0.2.14"


class KerasVersionError(ImportError):
    """TensorFlow was imported with Keras 3 as `tf.keras` before kerastricks."""


def ensure_legacy_keras() -> None:
    """Makes `tf.keras` the Keras 2 API (`tf_keras`), or raises if it is too late."""
    if "tensorflow" not in sys.modules:
        os.environ["TF_USE_LEGACY_KERAS"] = "1"
        return
    import tensorflow as tf

    keras_module = getattr(tf.keras, "__name__", "") or ""
    if keras_module.startswith("tf_keras"):
        return
    version = getattr(tf.keras, "__version__", "unknown")
    if not version.startswith("3"):
        return
    raise KerasVersionError(
        f"TensorFlow was imported before kerastricks with Keras {version} as tf.keras; "
        "kerastricks and tfimm need the Keras 2 API (tf-keras). Either `import kerastricks` "
        "before `import tensorflow`, or set the environment variable TF_USE_LEGACY_KERAS=1 "
        "before Python starts (in a notebook: os.environ['TF_USE_LEGACY_KERAS'] = '1' in the "
        "first cell, then restart the kernel)."
    )


def ensure_tfimm() -> None:
    """Raises an ImportError with the install command when tfimm is missing."""
    if importlib.util.find_spec("tfimm") is None:
        raise ImportError(
            "kerastricks needs tfimm 0.2.14, which is not installed. Install it with:\n"
            f"    {TFIMM_INSTALL}\n"
            "(its metadata says Python < 3.11, but it is pure Python and works on 3.11+)."
        )
