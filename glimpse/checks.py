"""Argument checks at public boundaries, written once: one wording for every package."""

from __future__ import annotations

import numpy as np

__all__ = ["check_positive_int"]


def check_positive_int(name: str, value: object) -> int:
    """``value`` as an ``int`` if it is a positive integer (Python or NumPy, not a ``bool``);
    else a one-line ``ValueError``: ``"<name> must be a positive int, got <value>"``."""
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)
