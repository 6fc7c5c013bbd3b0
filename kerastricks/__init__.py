"""kerastricks: the Kaggle image-classification trick stack for TensorFlow/Keras."""

from kerastricks._compat import ensure_legacy_keras, ensure_tfimm

# Must run before anything imports TensorFlow: it selects the Keras 2 API (tf-keras).
ensure_legacy_keras()
ensure_tfimm()

__version__ = "0.1.0"

__all__ = ["__version__"]
