"""Pure annealing math: works on python floats, numpy arrays and TensorFlow tensors alike.

fastai's `sched_cos` / `combine_scheds` style (STYLE.md anchor 2): the Keras schedules of this
package call these functions on the step tensor, and the same functions plot or unit-test a
schedule without a graph.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from types import SimpleNamespace
from typing import Any

import numpy as np
import tensorflow as tf

_NP_OPS = SimpleNamespace(cos=np.cos, where=np.where, clip=np.clip, floor=np.floor, abs=np.abs)
_TF_OPS = SimpleNamespace(
    cos=tf.cos, where=tf.where, clip=tf.clip_by_value, floor=tf.floor, abs=tf.abs
)


def _ops(*values: Any) -> SimpleNamespace:
    """The tf ops when any value is a tensor, else the numpy ones (python floats, arrays)."""
    return _TF_OPS if any(tf.is_tensor(v) for v in values) else _NP_OPS


def annealing_linear(start: Any, end: Any, pct: Any) -> Any:
    """Linear interpolation from `start` (pct=0) to `end` (pct=1)."""
    # Weighted form rather than start + (end - start) * pct: exact at both ends in float32,
    # where the latter leaves max_lr-sized rounding noise on a tiny final LR.
    return start * (1.0 - pct) + end * pct


def annealing_cos(start: Any, end: Any, pct: Any) -> Any:
    """Cosine annealing from `start` (pct=0) to `end` (pct=1), as fastai/PyTorch."""
    # cos²(π·pct/2) equals (1 + cos(π·pct)) / 2, but does not cancel near pct=1: in float32 the
    # usual form leaves ~1e-7 of noise, which would swamp a final LR of max_lr/1e5.
    half = _ops(pct).cos(math.pi * pct / 2.0)
    return end + (start - end) * half * half


def annealing_exp(start: Any, end: Any, pct: Any) -> Any:
    """Exponential (geometric) interpolation from `start` to `end`; both must be > 0."""
    return start * (end / start) ** pct


ANNEALERS: dict[str, Callable[[Any, Any, Any], Any]] = {
    "cos": annealing_cos,
    "linear": annealing_linear,
    "exp": annealing_exp,
}


def anneal_piecewise(
    pos: Any, boundaries: Sequence[float], fns: Sequence[Callable[[Any], Any]]
) -> Any:
    """Value at `pos` of a schedule whose piece i runs over [boundaries[i], boundaries[i+1]].

    Piece i gets its own progress pct in [0, 1]; a position belongs to the first piece whose end
    it does not pass (PyTorch `OneCycleLR`'s rule), and positions past the last boundary keep the
    final value. A piece of zero or negative width is skipped (its end value holds).

    Args:
        pos: position (a step, or a fraction of training): float, numpy array or tensor.
        boundaries: `len(fns) + 1` python floats.
        fns: one function of pct per piece, e.g. `functools.partial(annealing_cos, 1e-3, 1e-5)`.
    """
    if len(boundaries) != len(fns) + 1:
        raise ValueError(
            f"anneal_piecewise needs len(boundaries) == len(fns) + 1; received "
            f"{len(boundaries)} boundaries for {len(fns)} pieces."
        )
    ops = _ops(pos)
    pcts = []
    for start, end in zip(boundaries[:-1], boundaries[1:], strict=True):
        # Boundaries are python floats, so this branch is taken at trace time, not on a tensor.
        if end - start <= 0:
            pcts.append(1.0 + 0.0 * pos)
            continue
        if ops is _TF_OPS:
            # Rounded to the step's dtype first, so that pct is exactly 1 at a boundary step.
            start, end = tf.cast(start, pos.dtype), tf.cast(end, pos.dtype)
        pcts.append(ops.clip((pos - start) / (end - start), 0.0, 1.0))
    value = fns[-1](pcts[-1])
    for i in reversed(range(len(fns) - 1)):
        value = ops.where(pos <= boundaries[i + 1], fns[i](pcts[i]), value)
    return value if ops is _TF_OPS or np.ndim(value) else float(value)


def combine_schedules(
    pcts: Sequence[float], fns: Sequence[Callable[[Any], Any]]
) -> Callable[[Any], Any]:
    """fastai's `combine_scheds`: fns[i] runs for a fraction pcts[i] of training (sum 1).

    Returns a function of the training position in [0, 1].

    Example:
    ```python
    warm_up = functools.partial(annealing_cos, 4e-5, 1e-3)
    anneal = functools.partial(annealing_cos, 1e-3, 1e-8)
    one_cycle = combine_schedules([0.25, 0.75], [warm_up, anneal])
    one_cycle(0.25)  # 1e-3
    ```
    """
    if not math.isclose(sum(pcts), 1.0, abs_tol=1e-6) or min(pcts) < 0:
        raise ValueError(f"combine_schedules needs pcts >= 0 that sum to 1; received {pcts}.")
    boundaries = [0.0, *np.cumsum(pcts).tolist()]
    return functools.partial(anneal_piecewise, boundaries=boundaries, fns=list(fns))


def cyclical_value(
    step: Any,
    initial_learning_rate: float,
    maximal_learning_rate: float,
    step_size: float,
    scale_fn: Callable[[Any], Any],
    scale_mode: str = "cycle",
) -> Any:
    """Smith's cyclical LR (tensorflow-addons `CyclicalLearningRate` formula) at `step`."""
    ops = _ops(step)
    cycle = ops.floor(1.0 + step / (2.0 * step_size))
    x = ops.abs(step / step_size - 2.0 * cycle + 1.0)
    scale = scale_fn(cycle if scale_mode == "cycle" else step)
    amplitude = maximal_learning_rate - initial_learning_rate
    return initial_learning_rate + amplitude * ops.clip(1.0 - x, 0.0, 1.0) * scale
