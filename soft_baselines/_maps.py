"""Pieces shared by the families' ``spatial_map`` methods (see
:mod:`soft_baselines.attention_maps`): mass received through a linear read of the map."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["adjoint", "received", "window_received"]


def received(weights: Tensor) -> Tensor:
    """Attention received by each key: ``(B, N_q, N_k) -> (B, N_k)``, the column sums of an
    affinity over its queries (in at least float32)."""
    return weights.to(torch.promote_types(weights.dtype, torch.float32)).sum(dim=1)


def adjoint(read: Callable[[Tensor], Tensor], weights: Tensor, height: int, width: int) -> Tensor:
    """Spread ``weights`` back onto the pixels a linear ``read`` takes them from.

    ``read`` maps a one-channel map ``(B, 1, H, W)`` linearly to values of the shape of
    ``weights`` (pooled cells, bilinear samples, ...); the result ``(B, H, W)`` is
    ``sum_j weights_j * d read_j / d pixel`` (the adjoint of ``read``, by autograd), so
    each value's weight lands on the pixels it was read from, shared as the read shares
    them. Float32 at least, autocast off; nothing outside ``read``'s input gets a gradient.
    """
    work = torch.promote_types(weights.dtype, torch.float32)
    probe = torch.zeros(
        weights.shape[0], 1, height, width, dtype=work, device=weights.device, requires_grad=True
    )
    with torch.enable_grad(), torch.autocast(device_type=weights.device.type, enabled=False):
        out = read(probe)
        (grad,) = torch.autograd.grad(out, probe, grad_outputs=weights.detach().to(out.dtype))
    return grad[:, 0]


def window_received(weights: Tensor, height: int, width: int, kernel_size: int) -> Tensor:
    """Attention received inside ``k x k`` windows: ``weights (B, k*k, H*W)`` (entry ``t``
    of position ``i``'s window, the layout of :func:`soft_baselines._local.neighbourhoods`)
    -> ``(B, H, W)``, every position's sum of the weights the windows around it give it
    (``F.fold``, the adjoint of the window read; entries outside the map are dropped)."""
    w = weights.to(torch.promote_types(weights.dtype, torch.float32))
    pad = kernel_size // 2
    return F.fold(w, (height, width), kernel_size, padding=pad)[:, 0]
