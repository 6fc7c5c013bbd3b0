"""Learning-rate schedules: pure annealing math and small serialisable Keras schedules.

Each Keras schedule is a `LearningRateSchedule` stepped per batch with `optimizer.iterations`,
serialisable through `get_config` (registered as `kerastricks>Name`), and built from tensor ops
only (no python branch on a tensor), so it compiles with XLA on TPU.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from typing import Any

import tensorflow as tf

from kerastricks.schedules.annealing import (
    ANNEALERS,
    anneal_piecewise,
    annealing_cos,
    annealing_exp,
    annealing_linear,
    combine_schedules,
    cyclical_value,
)
from kerastricks.schedules.cyclical import Cyclical
from kerastricks.schedules.piecewise import OneCycle, PiecewiseAnneal, WarmupCosine
from kerastricks.schedules.staged import Constant, Staged

_Schedule = tf.keras.optimizers.schedules.LearningRateSchedule


_SCHEDULES: dict[str, Callable[..., _Schedule]] = {
    "one_cycle": OneCycle,
    "one_cycle_fastai": OneCycle.fastai,
    "warmup_cosine": WarmupCosine,
    "cyclical": Cyclical,
    "constant": Constant,
}


def list_schedules() -> list[str]:
    """Names accepted by `get_schedule`."""
    return sorted(_SCHEDULES)


def get_schedule(name: str, **kwargs: Any) -> _Schedule:
    """Builds a schedule by its registry name, e.g. `get_schedule("one_cycle", max_lr=1e-3,
    total_steps=1000)`; the errors name the closest schedule or the accepted arguments."""
    if name not in _SCHEDULES:
        close = difflib.get_close_matches(name, list(_SCHEDULES), n=3, cutoff=0.5)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(f"Unknown schedule {name!r}.{hint} Known: {', '.join(list_schedules())}.")
    factory = _SCHEDULES[name]
    signature = inspect.signature(factory)
    try:
        signature.bind(**kwargs)
    except TypeError as error:
        raise ValueError(
            f"get_schedule({name!r}): {error}. It takes: {', '.join(signature.parameters)}."
        ) from None
    return factory(**kwargs)


__all__ = [
    "ANNEALERS",
    "Constant",
    "Cyclical",
    "OneCycle",
    "PiecewiseAnneal",
    "Staged",
    "WarmupCosine",
    "anneal_piecewise",
    "annealing_cos",
    "annealing_exp",
    "annealing_linear",
    "combine_schedules",
    "cyclical_value",
    "get_schedule",
    "list_schedules",
]
