"""Image sizes: ``(H, W)`` from what configs and callers write (an int for a square, or a pair).

Shared by the cameras (``utils.geometry.camera``), the renderer (``utils.render``) and the data layer, so
it sits below all of them. Imports numpy only.
"""

from __future__ import annotations

import numpy as np


def image_hw(size, what: str = "image size") -> tuple[int, int]:
    """``(H, W)`` in pixels from an int (a square) or a pair.

    Args:
        size: ``int`` or a pair ``(H, W)`` of ints (any sequence or tensor of two numbers).
        what: the argument's name in the error message (``"resolution"`` for the renderer).

    Returns:
        ``(H, W)``, both positive Python ints.

    Raises:
        ValueError: ``size`` is neither an int nor a pair, or a side is not positive (named ``what``).
    """
    if isinstance(size, (int, np.integer)):
        h = w = int(size)
    else:
        try:
            h, w = (int(s) for s in size)
        except (TypeError, ValueError):
            raise ValueError(f"{what} must be an int or (H, W), got {size!r}") from None
    if h <= 0 or w <= 0:
        raise ValueError(f"{what} must be positive, got (H, W) = ({h}, {w})")
    return h, w
