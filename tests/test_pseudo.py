"""Pseudo-label selection: threshold and top-k per class, hard and soft targets."""

import numpy as np
import pytest

import kerastricks  # noqa: F401
from kerastricks.pseudo import pseudo_targets, select_confident

PROBS = np.array(
    [
        [0.97, 0.02, 0.01],
        [0.40, 0.50, 0.10],
        [0.05, 0.94, 0.01],
        [0.91, 0.05, 0.04],
        [0.10, 0.10, 0.80],
        [0.01, 0.99, 0.00],
    ]
)


def test_threshold_keeps_confident_rows():
    assert select_confident(PROBS, threshold=0.9).tolist() == [0, 2, 3, 5]
    assert select_confident(PROBS, threshold=0.95).tolist() == [0, 5]


def test_top_k_per_class_keeps_classes_balanced():
    chosen = select_confident(PROBS, top_k=1)
    assert chosen.tolist() == [0, 4, 5]
    assert sorted(PROBS[chosen].argmax(axis=1).tolist()) == [0, 1, 2]
    assert select_confident(PROBS, top_k=2).tolist() == [0, 2, 3, 4, 5]


def test_exactly_one_rule_must_be_given():
    with pytest.raises(ValueError, match="exactly one"):
        select_confident(PROBS)
    with pytest.raises(ValueError, match="pseudo.threshold"):
        select_confident(PROBS, threshold=1.5)


def test_hard_and_soft_targets():
    hard = pseudo_targets(PROBS[:2], soft=False)
    np.testing.assert_array_equal(hard, [[1, 0, 0], [0, 1, 0]])
    soft = pseudo_targets(PROBS[:2], soft=True)
    np.testing.assert_allclose(soft.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(soft[1], PROBS[1], rtol=1e-6)
