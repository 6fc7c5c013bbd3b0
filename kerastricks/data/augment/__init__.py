"""Augmentations for `tf.data`: a YAML registry over kerastricks', Keras 3 and keras-cv layers.

Depends on TensorFlow (and the `keras` package it installs) only, so it can be imported alone.
"""

from kerastricks.data.augment.affine import (
    RandomAffine,
    affine_matrices,
    affine_transform,
    random_affine,
)
from kerastricks.data.augment.mix import MixUpCutMix
from kerastricks.data.augment.registry import (
    AugmentPipeline,
    list_augmentations,
    resolve_augmentations,
)

__all__ = [
    "AugmentPipeline",
    "MixUpCutMix",
    "RandomAffine",
    "affine_matrices",
    "affine_transform",
    "list_augmentations",
    "random_affine",
    "resolve_augmentations",
]
