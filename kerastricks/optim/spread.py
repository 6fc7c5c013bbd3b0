"""Discriminative learning rates as pure math: one multiplier per layer group.

No TensorFlow here: `spread_lrs` turns a config spec into plain floats, relative to the
head's learning rate (the last group gets 1.0 for the fastai and timm specs). Which variables
form the groups is the caller's choice; `kerastricks.models.layer_decay` gives timm's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

SPEC_FORMS = (
    '{"slice": [lo, hi]}',
    '{"slice": [hi]}',
    '{"layer_decay": 0.75}',
    "[m_0, ..., m_last]",
)


def spread_lrs(n_groups: int, spec: Mapping[str, Any] | Sequence[float]) -> list[float]:
    """Returns one LR multiplier per layer group (input side first, head last).

    - `{"slice": [lo, hi]}` follows fastai's `slice(lo, hi)`: learning rates spread
      geometrically from `lo` (first group) to `hi` (head), divided by `hi`.
    - `{"slice": [hi]}` follows fastai's `slice(hi)`: `hi / 10` for every group but the
      head, so multipliers `0.1, ..., 0.1, 1.0`.
    - `{"layer_decay": d}` is timm's `param_groups_layer_decay` formula: group `i` of `n`
      gets `d ** (n - 1 - i)`. It gives timm's LRs only when the groups are timm's depths
      (one per block, the final norm with the last block), which
      `kerastricks.models.layer_decay.layer_decay_multipliers` builds; over
      `layer_groups` (one per stage) the stem of resnet18 would get `d ** 5`, not timm's
      `d ** 9`.
    - A list gives the multipliers explicitly, one per group.

    Example:

    >>> spread_lrs(3, {"slice": [1e-5, 1e-3]})
    [0.01, 0.1, 1.0]

    Args:
        n_groups: number of layer groups, >= 1.
        spec: one of the forms above.

    Returns:
        `n_groups` non-negative floats.
    """
    if isinstance(n_groups, bool) or not isinstance(n_groups, int) or n_groups < 1:
        raise ValueError(f"spread_lrs needs n_groups >= 1. Received n_groups={n_groups!r}")
    if isinstance(spec, Mapping):
        return _spread_from_mapping(n_groups, spec)
    if isinstance(spec, Sequence) and not isinstance(spec, str):
        values = [_positive_number(value, spec, allow_zero=True) for value in spec]
        if len(values) != n_groups:
            raise ValueError(
                f"LR multiplier list {list(spec)!r} has {len(values)} entries but the model "
                f"has {n_groups} layer groups; give one multiplier per group."
            )
        return values
    raise ValueError(_bad_spec(spec, "it is neither a mapping nor a list"))


def _spread_from_mapping(n_groups: int, spec: Mapping[str, Any]) -> list[float]:
    if len(spec) != 1 or next(iter(spec)) not in ("slice", "layer_decay"):
        raise ValueError(_bad_spec(spec, "expected exactly one key, 'slice' or 'layer_decay'"))
    if "layer_decay" in spec:
        decay = _positive_number(spec["layer_decay"], spec)
        return [decay ** (n_groups - 1 - i) for i in range(n_groups)]
    bounds = spec["slice"]
    if isinstance(bounds, str) or not isinstance(bounds, Sequence) or len(bounds) not in (1, 2):
        raise ValueError(_bad_spec(spec, "'slice' takes [hi] or [lo, hi]"))
    if len(bounds) == 1:
        _positive_number(bounds[0], spec)
        return [0.1] * (n_groups - 1) + [1.0]
    lo = _positive_number(bounds[0], spec)
    hi = _positive_number(bounds[1], spec)
    if lo > hi:
        raise ValueError(_bad_spec(spec, f"lo={lo} is larger than hi={hi}"))
    if n_groups == 1:
        return [1.0]
    # fastai's even_mults (lo * step**i), divided by hi; written as a power of lo / hi so that
    # the first and last values are exact.
    ratio = lo / hi
    return [ratio ** (1.0 - i / (n_groups - 1)) for i in range(n_groups)]


def _positive_number(value: Any, spec: Any, allow_zero: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        kind = "a finite number >= 0" if allow_zero else "a finite number > 0"
        raise ValueError(_bad_spec(spec, f"{value!r} is not {kind}"))
    return float(value)


def _bad_spec(spec: Any, why: str) -> str:
    return f"Bad LR multiplier spec {spec!r}: {why}. Accepted forms: {', '.join(SPEC_FORMS)}."
