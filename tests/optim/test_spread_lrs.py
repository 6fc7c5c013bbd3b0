"""spread_lrs against fastai's slice and timm's layer decay formulas."""

import kerastricks  # noqa: F401  (selects tf-keras before TensorFlow is imported)

# isort: split
import math

import pytest

from kerastricks.optim import spread_lrs


def test_slice_lo_hi_is_geometric_and_relative_to_the_head():
    values = spread_lrs(4, {"slice": [1e-6, 1e-3]})
    # fastai even_mults(1e-6, 1e-3, 4) = 1e-6, 1e-5, 1e-4, 1e-3; divided by hi.
    assert values == pytest.approx([1e-3, 1e-2, 1e-1, 1.0], rel=1e-12)
    assert values[-1] == 1.0


def test_slice_hi_gives_a_tenth_to_all_but_the_head():
    assert spread_lrs(3, {"slice": [1e-3]}) == [0.1, 0.1, 1.0]
    assert spread_lrs(1, {"slice": [1e-3]}) == [1.0]


def test_layer_decay_is_timms_formula_over_the_given_groups():
    decay = 0.75
    assert spread_lrs(4, {"layer_decay": decay}) == pytest.approx(
        [decay**3, decay**2, decay, 1.0], rel=1e-12
    )


def test_single_group_and_explicit_list():
    assert spread_lrs(1, {"slice": [1e-5, 1e-3]}) == [1.0]
    assert spread_lrs(3, [0.0, 0.5, 2]) == [0.0, 0.5, 2.0]


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ({"slice": [1e-3, 1e-5]}, "larger than hi"),
        ({"slice": []}, "'slice' takes"),
        ({"slices": [1e-3]}, "exactly one key"),
        ({"layer_decay": -0.5}, "-0.5"),
        ({"layer_decay": math.nan}, "nan"),
        ([0.1, 1.0], "has 2 entries but the model has 3"),
        ("slice", "neither a mapping nor a list"),
    ],
)
def test_bad_specs_are_named(spec, fragment):
    with pytest.raises(ValueError) as info:
        spread_lrs(3, spec)
    assert fragment in str(info.value)
    assert "Bad LR multiplier spec" in str(info.value) or "entries" in str(info.value)


def test_bad_group_count():
    with pytest.raises(ValueError, match="n_groups=0"):
        spread_lrs(0, [1.0])
