"""One reading of an image size (kerastricks/_sizes.py)."""

import pytest

from kerastricks._sizes import size_pair


def test_an_int_or_a_pair_gives_height_and_width():
    assert size_pair(224) == (224, 224)
    assert size_pair([384, 512]) == (384, 512)
    assert size_pair((32, 48)) == (32, 48)


@pytest.mark.parametrize("bad", [(1, 2, 3), True, "224", 0, (8, -1)])
def test_anything_else_is_refused_by_name(bad):
    with pytest.raises(ValueError, match="input_size must be"):
        size_pair(bad, "input_size")
