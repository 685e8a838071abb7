"""Region-based non-local operation: affinities between neighbouring regions, not points.

Huang, Bors (2020), *Region-based Non-local Operation for Video Classification* (ICPR
2020; arXiv:2007.09033). A non-local block whose pairwise function compares the
*regions* around two positions rather than the two feature vectors:

``y_i = sum_j softmax_j(theta(x_N(i)) . theta(x_N(j))) g(x_j)``

where ``theta(x_N(i))`` summarises the ``k x k`` neighbourhood ``N(i)`` by a channel-wise
(depthwise) ``k x k`` convolution of a 1x1 embedding, the same ``theta`` on both sides, and
``g`` a 1x1 convolution. The output is ``x + BN(W_z y)`` with the BN zero-initialised,
exactly the identity at init. This module is the 2-D (image) form of the operation; the
paper's attention chain adds a channel-attention module after it (compose with ``"se"``
or ``"eca"`` for that).

Fast path: the attention runs through ``scaled_dot_product_attention`` (``scale=1``); the
tests compare it with the region sums and softmax written out.

Registered as ``"rnl"``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from soft_baselines._checks import check_feature_map, check_odd_kernel, check_positive_int
from soft_baselines._maps import received
from soft_baselines.registry import register

__all__ = ["RegionNonLocal"]


@register("rnl", spatial_map=True)
class RegionNonLocal(nn.Module):
    """Region-based non-local block ``x + BN(W_z y)``, exactly the identity at init.

    Shapes: ``(B, C, H, W) -> (B, C, H, W)``; memory of the attention ``O(B (H W)^2)``
    without fused kernels, as for the non-local block.

    Args:
        channels: ``C``.
        inter_channels: width of ``theta`` and ``g`` (default ``max(1, C // 2)``).
        kernel_size: odd side ``k`` of the region (default 3), zero padding at the edges.
    """

    def __init__(
        self, channels: int, inter_channels: int | None = None, kernel_size: int = 3
    ) -> None:
        super().__init__()
        self.channels = check_positive_int("channels", channels)
        ci = max(1, channels // 2) if inter_channels is None else inter_channels
        self.inter_channels = check_positive_int("inter_channels", ci)
        check_odd_kernel("kernel_size", kernel_size)
        self.kernel_size = kernel_size
        self.embed = nn.Conv2d(channels, ci, 1)
        self.region = nn.Conv2d(ci, ci, kernel_size, padding=kernel_size // 2, groups=ci)
        self.g = nn.Conv2d(channels, ci, 1)
        self.w_z = nn.Conv2d(ci, channels, 1)
        self.bn = nn.BatchNorm2d(channels)
        nn.init.zeros_(self.bn.weight)
        nn.init.zeros_(self.bn.bias)

    def theta(self, x: Tensor) -> Tensor:
        """Region descriptors ``theta(x_N(i))``: ``(B, C, H, W) -> (B, C', H, W)``."""
        check_feature_map(x, self.channels, type(self).__name__)
        return self.region(self.embed(x))

    def spatial_map(self, x: Tensor) -> Tensor:
        """Attention received per position: the column sums over all queries of
        ``softmax(theta theta^T)``, ``(B, C, H, W) -> (B, H, W)``."""
        t = self.theta(x).flatten(2).transpose(1, 2)  # (B, N, C')
        t = t.to(torch.promote_types(t.dtype, torch.float32))
        b, _, h, w = x.shape
        return received(torch.softmax(t @ t.transpose(1, 2), dim=-1)).view(b, h, w)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, H, W) -> (B, C, H, W)``."""
        t = self.theta(x).flatten(2).transpose(1, 2)  # (B, N, C')
        v = self.g(x).flatten(2).transpose(1, 2)
        t = t.to(v.dtype)
        y = F.scaled_dot_product_attention(t, t, v, scale=1.0)
        b, _, h, w = x.shape
        y = y.transpose(1, 2).reshape(b, self.inter_channels, h, w)
        return x + self.bn(self.w_z(y))

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, inter_channels={self.inter_channels}, "
            f"kernel_size={self.kernel_size}"
        )
