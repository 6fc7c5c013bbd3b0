"""`GradualUnfreeze`: unfreeze layer groups from the head down, epoch by epoch."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import tensorflow as tf

from kerastricks.callbacks._optimizer import build_optimizer, missing_slots


def unfrozen_count(epoch: int, schedule: Mapping[int, int | str], num_groups: int) -> int:
    """Number of groups, counted from the head, that train at `epoch` (0-based).

    `schedule` maps an epoch to the count from that epoch on (`"all"` = every group); before
    its first epoch only the head trains.
    """
    started = [e for e in schedule if e <= epoch]
    if not started:
        return 1
    count = schedule[max(started)]
    return num_groups if count == "all" else max(1, min(int(count), num_groups))


class GradualUnfreeze(tf.keras.callbacks.Callback):
    """Trains the head first, then unfreezes layer groups from the head towards the input.

    fastai's gradual unfreezing with Lightning `BackboneFinetuning` semantics: frozen groups
    have `trainable=False`, so their BatchNorm layers run in inference mode (Keras 2) and
    keep their statistics; a newly unfrozen group starts at 0.1x the head's LR multiplier
    (`backbone_initial_ratio_lr`) when the optimizer has per-group LR multipliers
    (`kerastricks.optim.with_lr_multipliers` with one multiplier per group, in the same order).
    The optimizer is built at the start on every variable that may ever train, so that newly
    unfrozen variables have slots (tf_keras optimizers cannot add slots later) and the head's
    slots are kept across each unfreeze. The train function is rebuilt on each change.

    Note: Adam-type optimizers in tf_keras use the global step for bias correction, so the
    first steps of a group unfrozen late are larger than the LR suggests (up to ~3x for Adam);
    the 0.1x LR ratio is what keeps them gentle.

    Example:
    ```python
    groups = [[model.get_layer("stem")], [model.get_layer("body")], [model.get_layer("head")]]
    unfreeze = GradualUnfreeze(groups, {0: 1, 2: 2, 4: "all"})  # head; +body at 2; all at 4
    model.fit(train_ds, epochs=6, callbacks=[unfreeze])
    ```

    Args:
        groups: ordered groups, input side first and head last: lists of layers, objects with
            `.layers` (as `kerastricks.models.layer_groups` returns), or an int `n` to call
            `kerastricks.models.layer_groups(model, n)` at the start of training.
        schedule: `{epoch: count}`, where count is how many groups from the head train from
            that epoch on (`"all"` for every group). Give `schedule` or `every`.
        every: unfreeze one more group every `every` epochs (head only for the first ones).
        initial_lr_ratio: LR multiplier of a newly unfrozen group relative to the head's;
            `None` leaves the multipliers alone.
        verbose: 1 prints each change.
    """

    def __init__(
        self,
        groups: Sequence[Any] | int,
        schedule: Mapping[int, int | str] | None = None,
        every: int | None = None,
        initial_lr_ratio: float | None = 0.1,
        verbose: int = 0,
    ) -> None:
        super().__init__()
        if (schedule is None) == (every is None):
            raise ValueError(
                "GradualUnfreeze needs exactly one of schedule={epoch: count} or every=k; "
                f"received schedule={schedule!r}, every={every!r}."
            )
        if every is not None and every < 1:
            raise ValueError(f"GradualUnfreeze needs every >= 1. Received every={every}.")
        bad = {e: c for e, c in (schedule or {}).items() if c != "all" and not int(c) >= 1}
        if bad:
            raise ValueError(
                f"GradualUnfreeze schedule values must be counts >= 1 or 'all'; received {bad}."
            )
        if (
            isinstance(groups, int)
            and groups < 2
            or not isinstance(groups, int)
            and len(groups) < 2
        ):
            raise ValueError(f"GradualUnfreeze needs at least 2 groups. Received {groups!r}.")
        self.groups_spec = groups
        self.schedule = dict(schedule) if schedule is not None else None
        self.every = every
        self.initial_lr_ratio = initial_lr_ratio
        self.verbose = verbose
        self.groups: list[Any] = []  # kerastricks.models.LayerGroup
        self.group_names: list[str] = []
        self.unfrozen = 0
        self.changes: list[tuple[int, int]] = []

    def count_at(self, epoch: int) -> int:
        """Number of groups (from the head) that train at `epoch`."""
        num_groups = len(self.groups)
        if self.every is not None:
            return min(1 + epoch // self.every, num_groups)
        return unfrozen_count(epoch, self.schedule or {}, num_groups)

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self.groups, self.group_names = _resolve_groups(self.groups_spec, self.model)
        self.unfrozen, self.changes = 0, []
        optimizer = self.model.optimizer
        candidates = [v for v in self.model.weights if v.trainable]
        missing = missing_slots(optimizer, candidates)
        if missing:
            raise ValueError(
                f"The optimizer was built before GradualUnfreeze and has no slots for "
                f"{len(missing)} variables (e.g. {missing[:3]}); tf_keras optimizers cannot add "
                "them later. Use a fresh optimizer (compile again) or build it on every "
                "variable first: optimizer.build([v for v in model.weights if v.trainable])."
            )
        build_optimizer(optimizer, candidates)

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        from kerastricks.models.groups import freeze_groups

        count = self.count_at(epoch)
        if count == self.unfrozen:
            return
        first = len(self.groups) - count
        # The stages' engine: layers and model-level variables (ViT's pos_embed, cls_token).
        freeze_groups(self.groups, count)
        if self.unfrozen and self.initial_lr_ratio is not None:
            newly = range(len(self.groups) - count, len(self.groups) - self.unfrozen)
            ratio = self.initial_lr_ratio
            _scale_new_groups(self.model.optimizer, list(newly), ratio, len(self.groups))
        self.unfrozen = count
        self.changes.append((epoch, count))
        # The traced train step captured the old trainable variables; retrace on next call.
        self.model.make_train_function(force=True)
        if self.verbose:
            names = ", ".join(self.group_names[first:])
            print(f"GradualUnfreeze: epoch {epoch}: training {count} group(s): {names}")


def _resolve_groups(
    spec: Sequence[Any] | int, model: tf.keras.Model
) -> tuple[list[Any], list[str]]:
    """The groups as `LayerGroup`s (those of `layer_groups` kept whole, with their loose
    variables), and their names."""
    from kerastricks.models.groups import LayerGroup, layer_groups

    if isinstance(spec, int):
        spec = layer_groups(model, spec)
    groups, names = [], []
    for index, entry in enumerate(spec):
        if isinstance(entry, LayerGroup):
            groups.append(entry)
            names.append(entry.name)
            continue
        if isinstance(entry, tf.keras.layers.Layer):
            layers = [entry]
        else:
            layers = list(getattr(entry, "layers", entry))
        if not layers or not all(isinstance(la, tf.keras.layers.Layer) for la in layers):
            raise TypeError(
                f"GradualUnfreeze group {index} must be a non-empty list of Keras layers or "
                f"have `.layers`; received {entry!r}."
            )
        name = getattr(entry, "name", None) or f"group{index}"
        groups.append(LayerGroup(name, layers))
        names.append(name)
    return groups, names


def _scale_new_groups(
    optimizer: tf.keras.optimizers.Optimizer, indices: list[int], ratio: float, num_groups: int
) -> None:
    """Sets the multiplier of the newly unfrozen groups to `ratio` x the head's, if the
    optimizer has one multiplier per group (`kerastricks.optim.with_lr_multipliers`)."""
    from kerastricks.optim import get_lr_multipliers, set_lr_multipliers

    try:
        multipliers = get_lr_multipliers(optimizer)
    except (ValueError, TypeError):
        return
    if len(multipliers) != num_groups:
        tf.get_logger().warning(
            "GradualUnfreeze: the optimizer has %d LR groups but there are %d unfreeze groups; "
            "the new groups' LR ratio is not applied.",
            len(multipliers),
            num_groups,
        )
        return
    for index in indices:
        multipliers[index] = ratio * multipliers[-1]
    set_lr_multipliers(optimizer, multipliers)
