"""Image sizes as (height, width): one reading of an int or a pair, without TensorFlow."""

from __future__ import annotations

from collections.abc import Sequence


def size_pair(image_size: int | Sequence[int], name: str = "image_size") -> tuple[int, int]:
    """`(height, width)` from an int or a pair; a ValueError names anything else.

    Example:
    ```python
    size_pair(224)  # (224, 224)
    size_pair([384, 512])  # (384, 512)
    ```

    Args:
        image_size: one side of a square, or (height, width).
        name: the argument's name, for the message.
    """
    if isinstance(image_size, bool):
        raise ValueError(f"{name} must be an int or (height, width). Received: {image_size!r}")
    if isinstance(image_size, int):
        size = (image_size, image_size)
    elif isinstance(image_size, (tuple, list)) and len(image_size) == 2:
        size = (int(image_size[0]), int(image_size[1]))
    else:
        raise ValueError(f"{name} must be an int or (height, width). Received: {image_size!r}")
    if min(size) <= 0:
        raise ValueError(f"{name} must be positive. Received: {image_size!r}")
    return size
