"""Counting FLOPs of a real forward pass with :class:`torch.utils.flop_counter.FlopCounterMode`.

The counter sees every dispatched ATen op and counts the ones with a registered formula:
matrix products (``mm``, ``addmm``, ``bmm``, ...), convolutions and attention kernels, each
as ``2 * multiply-accumulates`` (e.g. ``nn.Linear(5, 3)`` on 4 rows: ``2 * 4 * 5 * 3 = 120``).
Element-wise ops, pooling, normalisation, bias additions and ``grid_sample`` count 0: the
numbers are the dominant multiply-accumulate cost, the same convention as ``fvcore`` and
``torch``'s own counter.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

__all__ = ["count_flops"]


def count_flops(fn: Callable[[], Any]) -> tuple[int, Any]:
    """FLOPs counted while running ``fn()`` (under ``torch.no_grad``), and its result."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        out = fn()
    return int(counter.get_total_flops()), out
