"""Class swapping: give an existing object (an optimizer, a model) one more behaviour while it
keeps its type, name, config and checkpoint layout."""

from __future__ import annotations

_CLASSES: dict[tuple[type, type], type] = {}


def with_mixin(mixin: type, base: type) -> type:
    """The subclass `(mixin, base)`, created once, under the base's own name and module so that
    serialisation and checkpoints still see the object's own class."""
    key = (mixin, base)
    if key not in _CLASSES:
        _CLASSES[key] = type(
            base.__name__,
            (mixin, base),
            {"__module__": base.__module__, "__qualname__": base.__qualname__},
        )
    return _CLASSES[key]
