"""k x k neighbourhoods of every position, for the local self-attention families."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["neighbourhoods", "relative_offsets", "valid_neighbours"]


def neighbourhoods(x: Tensor, kernel_size: int, dilation: int = 1) -> Tensor:
    """Features of the ``k x k`` window around each position, zero outside the map.

    ``(B, C, H, W) -> (B, C, k*k, H*W)``; window entry ``t = a * k + b`` is the position
    offset by ``(dilation * (a - k // 2), dilation * (b - k // 2))``.
    """
    b, c, h, w = x.shape
    pad = dilation * (kernel_size // 2)
    cols = F.unfold(x, kernel_size, dilation=dilation, padding=pad)  # (B, C*k*k, H*W)
    return cols.view(b, c, kernel_size * kernel_size, h * w)


def valid_neighbours(h: int, w: int, kernel_size: int, dilation: int = 1, device=None) -> Tensor:
    """Boolean ``(k*k, H*W)``: whether window entry ``t`` of position ``i`` is inside."""
    ones = torch.ones(1, 1, h, w, device=device)
    return neighbourhoods(ones, kernel_size, dilation)[0, 0] > 0.5


def relative_offsets(kernel_size: int, dilation: int = 1, device=None) -> Tensor:
    """``(k*k, 2)`` offsets ``(dy, dx)`` of the window entries, in the order above."""
    r = torch.arange(kernel_size, device=device) - kernel_size // 2
    dy, dx = torch.meshgrid(r, r, indexing="ij")
    return dilation * torch.stack([dy.reshape(-1), dx.reshape(-1)], dim=1)
