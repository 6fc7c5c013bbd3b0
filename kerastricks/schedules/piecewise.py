"""Schedules made of annealed pieces: `PiecewiseAnneal`, `OneCycle`, `WarmupCosine`."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import tensorflow as tf

from kerastricks.schedules.annealing import ANNEALERS, anneal_piecewise

_register = tf.keras.saving.register_keras_serializable(package="kerastricks")
_Schedule = tf.keras.optimizers.schedules.LearningRateSchedule


def _positive(owner: str, **values: float) -> None:
    for key, value in values.items():
        if not value > 0:
            raise ValueError(f"{owner} needs {key} > 0. Received {key}={value!r}.")


def _step(step: Any) -> tf.Tensor:
    return tf.cast(step, tf.float32)


@_register
class PiecewiseAnneal(_Schedule):
    """A schedule that anneals between `values` at step `boundaries`, one strategy per piece.

    The primitive that `OneCycle`, its momentum schedule and `WarmupCosine` are made of
    (fastai-style composition); use it for any other warmup/decay shape.

    Example:
    ```python
    # linear warmup 0 -> 1e-3 over 100 steps, then cosine to 1e-5 at step 1000
    schedule = PiecewiseAnneal([0, 100, 1000], [0.0, 1e-3, 1e-5], anneal=["linear", "cos"])
    optimizer = tf.keras.optimizers.AdamW(learning_rate=schedule)
    ```

    Args:
        boundaries: increasing steps (python numbers), one more than the pieces.
        values: the value at each boundary (same length as `boundaries`).
        anneal: `"cos"`, `"linear"` or `"exp"`, or one of these per piece.
        name: optional name for the ops.
    """

    def __init__(
        self,
        boundaries: Sequence[float],
        values: Sequence[float],
        anneal: str | Sequence[str] = "cos",
        name: str | None = None,
    ) -> None:
        super().__init__()
        self.boundaries = [float(b) for b in boundaries]
        self.values = [float(v) for v in values]
        self.anneal = anneal if isinstance(anneal, str) else list(anneal)
        self.name = name
        strategies = self._strategies()
        if len(self.values) != len(self.boundaries) or len(self.boundaries) < 2:
            raise ValueError(
                f"{type(self).__name__} needs as many values as boundaries (at least 2); "
                f"received {len(self.boundaries)} boundaries and {len(self.values)} values."
            )
        unknown = sorted(set(strategies) - set(ANNEALERS))
        if unknown or len(strategies) != len(self.boundaries) - 1:
            raise ValueError(
                f"{type(self).__name__} needs anneal to be one of {sorted(ANNEALERS)} or a list "
                f"with one per piece ({len(self.boundaries) - 1}); received anneal={anneal!r}."
            )

    def _strategies(self) -> list[str]:
        if isinstance(self.anneal, str):
            return [self.anneal] * (len(self.boundaries) - 1)
        return list(self.anneal)

    def value_at(self, pos: Any) -> Any:
        """The schedule at step `pos` (float, numpy array or tensor), without TensorFlow ops
        unless `pos` is a tensor."""
        fns = [
            functools.partial(ANNEALERS[kind], self.values[i], self.values[i + 1])
            for i, kind in enumerate(self._strategies())
        ]
        return anneal_piecewise(pos, self.boundaries, fns)

    def __call__(self, step: Any) -> tf.Tensor:
        with tf.name_scope(self.name or type(self).__name__):
            return self.value_at(_step(step))

    def get_config(self) -> dict[str, Any]:
        return {
            "boundaries": self.boundaries,
            "values": self.values,
            "anneal": self.anneal,
            "name": self.name,
        }


@_register
class OneCycle(PiecewiseAnneal):
    """One-cycle LR schedule with PyTorch `OneCycleLR`'s values, step for step.

    The LR rises from `max_lr / div_factor` to `max_lr` during the first `pct_start` of the
    steps, then anneals to `max_lr / div_factor / final_div_factor` (Smith's super-convergence).
    Defaults follow PyTorch; `OneCycle.fastai(...)` gives fastai `fit_one_cycle`'s schedule.
    Steps past `total_steps` keep the final LR (PyTorch raises there).

    Example:
    ```python
    schedule = OneCycle(max_lr=1e-3, total_steps=epochs * steps_per_epoch)
    model.compile(optimizer=tf.keras.optimizers.AdamW(schedule), loss="mse")
    # beta_1 cycling 0.95 -> 0.85 -> 0.95 as PyTorch's cycle_momentum:
    callbacks = [MomentumScheduler(schedule.momentum_schedule())]
    ```

    Args:
        max_lr: peak learning rate.
        total_steps: number of optimizer steps in the cycle (epochs x steps per epoch).
        pct_start: fraction of the steps spent increasing the LR.
        div_factor: initial LR = `max_lr / div_factor`.
        final_div_factor: final LR = initial LR / `final_div_factor`.
        anneal_strategy: `"cos"` or `"linear"`.
        three_phase: PyTorch's three-phase variant (up, back down to the initial LR, then to
            the final LR).
        convention: `"pytorch"` (phases end at steps `pct_start * total_steps - 1` and
            `total_steps - 1`) or `"fastai"` (at fractions `pct_start` and 1 of
            `total_steps`, as fastai's `combined_cos`).
        name: optional name for the ops.
    """

    def __init__(
        self,
        max_lr: float,
        total_steps: int,
        pct_start: float = 0.3,
        div_factor: float = 25.0,
        final_div_factor: float = 1e4,
        anneal_strategy: str = "cos",
        three_phase: bool = False,
        convention: str = "pytorch",
        name: str | None = None,
    ) -> None:
        _positive("OneCycle", max_lr=max_lr, total_steps=total_steps, div_factor=div_factor)
        _positive("OneCycle", final_div_factor=final_div_factor)
        if not 0.0 <= pct_start <= 1.0:
            raise ValueError(f"OneCycle needs 0 <= pct_start <= 1. Received pct_start={pct_start}.")
        if anneal_strategy not in ("cos", "linear"):
            raise ValueError(
                f"OneCycle needs anneal_strategy 'cos' or 'linear'. Received {anneal_strategy!r}."
            )
        if convention not in ("pytorch", "fastai") or (three_phase and convention == "fastai"):
            raise ValueError(
                "OneCycle needs convention 'pytorch' or 'fastai' (fastai has no three_phase). "
                f"Received convention={convention!r}, three_phase={three_phase}."
            )
        self.max_lr = float(max_lr)
        self.total_steps = int(total_steps)
        self.pct_start = float(pct_start)
        self.div_factor = float(div_factor)
        self.final_div_factor = float(final_div_factor)
        self.anneal_strategy = anneal_strategy
        self.three_phase = bool(three_phase)
        self.convention = convention
        initial_lr = self.max_lr / self.div_factor
        min_lr = initial_lr / self.final_div_factor
        values = [initial_lr, self.max_lr, min_lr]
        if self.three_phase:
            values = [initial_lr, self.max_lr, initial_lr, min_lr]
        super().__init__(self._phase_ends(), values, anneal_strategy, name)

    @classmethod
    def fastai(
        cls,
        max_lr: float,
        total_steps: int,
        pct_start: float = 0.25,
        div: float = 25.0,
        div_final: float = 1e5,
        name: str | None = None,
    ) -> OneCycle:
        """fastai `fit_one_cycle`'s schedule: `combined_cos(pct_start, max_lr/div, max_lr,
        max_lr/div_final)` over the fraction `step / total_steps`."""
        return cls(
            max_lr,
            total_steps,
            pct_start=pct_start,
            div_factor=div,
            final_div_factor=div_final / div,
            convention="fastai",
            name=name,
        )

    def _phase_ends(self) -> list[float]:
        steps, pct = float(self.total_steps), self.pct_start
        if self.convention == "fastai":
            return [0.0, pct * steps, steps]
        if self.three_phase:
            return [0.0, pct * steps - 1.0, 2.0 * pct * steps - 2.0, steps - 1.0]
        return [0.0, pct * steps - 1.0, steps - 1.0]

    def momentum_schedule(
        self, base_momentum: float = 0.85, max_momentum: float = 0.95
    ) -> PiecewiseAnneal:
        """The momentum (beta_1) cycle that goes with this LR cycle: max -> base -> max, as
        PyTorch's `cycle_momentum` (three-phase: max -> base -> max, then held at max)."""
        values = [max_momentum, base_momentum, max_momentum]
        if self.three_phase:
            values = [max_momentum, base_momentum, max_momentum, max_momentum]
        return PiecewiseAnneal(self.boundaries, values, self.anneal_strategy)

    def get_config(self) -> dict[str, Any]:
        return {
            "max_lr": self.max_lr,
            "total_steps": self.total_steps,
            "pct_start": self.pct_start,
            "div_factor": self.div_factor,
            "final_div_factor": self.final_div_factor,
            "anneal_strategy": self.anneal_strategy,
            "three_phase": self.three_phase,
            "convention": self.convention,
            "name": self.name,
        }


@_register
class WarmupCosine(PiecewiseAnneal):
    """Linear warmup to `max_lr`, then cosine decay to `min_lr` at `total_steps`.

    The "Bag of tricks" / timm schedule (timm `CosineLRScheduler` with `warmup_prefix=True`);
    equal to Keras `CosineDecay(warmup_init_lr, total_steps - warmup_steps,
    alpha=min_lr / max_lr, warmup_target=max_lr, warmup_steps=warmup_steps)`, but with the
    total length and an absolute `min_lr` as arguments. Steps past `total_steps` keep `min_lr`.

    Example:
    ```python
    schedule = WarmupCosine(max_lr=1e-3, total_steps=10_000, warmup_steps=500)
    optimizer = tf.keras.optimizers.AdamW(learning_rate=schedule, weight_decay=0.05)
    ```

    Args:
        max_lr: LR at the end of the warmup.
        total_steps: steps of warmup plus decay.
        warmup_steps: steps of linear warmup (0: start at `max_lr`).
        warmup_init_lr: LR at step 0 of the warmup.
        min_lr: LR at `total_steps`.
        name: optional name for the ops.
    """

    def __init__(
        self,
        max_lr: float,
        total_steps: int,
        warmup_steps: int = 0,
        warmup_init_lr: float = 0.0,
        min_lr: float = 0.0,
        name: str | None = None,
    ) -> None:
        _positive("WarmupCosine", max_lr=max_lr, total_steps=total_steps)
        if not 0 <= warmup_steps <= total_steps:
            raise ValueError(
                "WarmupCosine needs 0 <= warmup_steps <= total_steps. Received "
                f"warmup_steps={warmup_steps}, total_steps={total_steps}."
            )
        self.max_lr = float(max_lr)
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.warmup_init_lr = float(warmup_init_lr)
        self.min_lr = float(min_lr)
        super().__init__(
            [0, warmup_steps, total_steps],
            [warmup_init_lr, max_lr, min_lr],
            ["linear", "cos"],
            name,
        )

    def get_config(self) -> dict[str, Any]:
        return {
            "max_lr": self.max_lr,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "warmup_init_lr": self.warmup_init_lr,
            "min_lr": self.min_lr,
            "name": self.name,
        }
