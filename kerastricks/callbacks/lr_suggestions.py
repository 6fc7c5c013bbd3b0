"""LR-finder suggestions: plain functions of `(lrs, losses)`, picked by name (fastai `lr_find`).

Each function takes the swept learning rates and the smoothed losses (numpy arrays, already
trimmed by `suggest_lrs`) and returns one suggested learning rate. No TensorFlow needed.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence

import numpy as np


def valley(lrs: np.ndarray, losses: np.ndarray) -> float:
    """fastai's default: the middle of the longest valley of the loss curve.

    The valley is the longest strictly decreasing run of losses (a longest increasing
    subsequence of the reversed curve); the suggestion sits about half-way down it, where
    the loss still falls fast but is far from diverging.
    """
    losses = np.asarray(losses, dtype=np.float64)
    count = len(losses)
    # depth[i]: length of the longest decreasing subsequence ending at i. O(n^2) on ~100
    # points; a patience-sorting O(n log n) version would not keep fastai's tie rule.
    depth = np.ones(count, dtype=int)
    for i in range(1, count):
        higher = losses[:i] > losses[i]
        if higher.any():
            depth[i] = depth[:i][higher].max() + 1
    end = int(np.argmax(depth))
    start = end - int(depth[end])
    third = (end - start) / 3
    index = start + int(third) + int(third / 2)
    return float(lrs[int(np.clip(index, 0, count - 1))])


def slide(
    lrs: np.ndarray,
    losses: np.ndarray,
    lr_diff: int = 15,
    thresh: float = 0.005,
    adjust_value: float = 1.0,
) -> float:
    """fastai's interval slide rule: walking down from the highest LR, the first LR where the
    loss slope `lr_diff` points apart differs by no more than `thresh` from the slope here."""
    losses = np.asarray(losses, dtype=np.float64)
    slope = np.gradient(losses)
    right, left = -1, -1 - lr_diff
    local_min_lr = lrs[max(left, -len(lrs))]
    while left >= -len(losses) and abs(slope[right] - slope[left]) > thresh:
        local_min_lr = lrs[left]
        right -= 1
        left -= 1
    return float(local_min_lr) * adjust_value


def minimum(lrs: np.ndarray, losses: np.ndarray) -> float:
    """One tenth of the LR at the minimum loss (fastai `minimum`, Smith's rule of thumb)."""
    return float(lrs[int(np.argmin(losses))]) / 10.0


def steep(lrs: np.ndarray, losses: np.ndarray) -> float:
    """The LR where the loss falls fastest against log(LR) (fastai `steep`)."""
    lrs = np.asarray(lrs, dtype=np.float64)
    slopes = np.diff(np.asarray(losses, dtype=np.float64)) / np.diff(np.log(lrs))
    return float(lrs[int(np.argmin(slopes))])


SUGGESTIONS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "valley": valley,
    "slide": slide,
    "minimum": minimum,
    "steep": steep,
}


def list_suggestions() -> list[str]:
    """Names accepted by `get_suggestion`."""
    return sorted(SUGGESTIONS)


def get_suggestion(name: str) -> Callable[[np.ndarray, np.ndarray], float]:
    """The suggestion function called `name`; the error names the closest ones."""
    if name not in SUGGESTIONS:
        close = difflib.get_close_matches(name, list(SUGGESTIONS), n=2, cutoff=0.5)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(
            f"Unknown LR suggestion {name!r}.{hint} Known: {', '.join(list_suggestions())}."
        )
    return SUGGESTIONS[name]


def suggest_lrs(
    lrs: Sequence[float], losses: Sequence[float], names: Sequence[str], num_it: int
) -> dict[str, float]:
    """Runs the named suggestions on a sweep, trimmed as fastai `lr_find` does.

    The first `num_it // 10` points (loss still warming up its average) and the last 5 (the
    divergence) are dropped, and so is everything from the first non-finite loss on. A sweep
    too short for that gives NaN suggestions.
    """
    functions = {name: get_suggestion(name) for name in names}
    lrs_array = np.asarray(lrs, dtype=np.float64)[num_it // 10 : -5]
    losses_array = np.asarray(losses, dtype=np.float64)[num_it // 10 : -5]
    bad = np.flatnonzero(~np.isfinite(losses_array))
    if bad.size:
        lrs_array, losses_array = lrs_array[: bad[0]], losses_array[: bad[0]]
    if len(losses_array) < 3:
        return {name: float("nan") for name in functions}
    return {name: fn(lrs_array, losses_array) for name, fn in functions.items()}
