"""Small autograd helpers shared by the channel-attention blocks."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["spatial_mean"]


class _SpatialMean(torch.autograd.Function):
    """``x.mean(dim=(2, 3))`` whose backward returns a broadcast view, not a full tensor.

    Autograd's own ``mean`` backward writes ``grad / (H W)`` out to the full ``(B, C, H, W)``
    shape and then adds it to the gate's gradient; here the gradient is a stride-0 view of
    the ``(B, C)`` values, so the sum with the other path's gradient is the only full pass.
    Same values (the division is done once per channel instead of once per element).
    """

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: Tensor) -> Tensor:
        ctx.shape = x.shape  # type: ignore[attr-defined]
        return x.mean(dim=(2, 3))

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> Tensor:
        b, c, h, w = ctx.shape  # type: ignore[attr-defined]
        return (grad / (h * w))[:, :, None, None].expand(b, c, h, w)


def spatial_mean(x: Tensor) -> Tensor:
    """Global average pool ``(B, C, H, W) -> (B, C)`` with a lean backward
    (:class:`_SpatialMean`); the plain ``mean`` where no gradient is needed."""
    if not (torch.is_grad_enabled() and x.requires_grad):
        return x.mean(dim=(2, 3))
    return _SpatialMean.apply(x)
