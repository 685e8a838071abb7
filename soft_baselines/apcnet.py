"""Adaptive context module (ACM) of APCNet: per-position affinities to pooled regions.

He, Deng, Zhou, Wang, Qiao (2019), *Adaptive Pyramid Context Network for Semantic
Segmentation* (CVPR 2019). For one scale ``s``, with ``x_r`` the input reduced by a 1x1
conv + BN + ReLU to ``C'`` channels:

- **Region features**: ``y_s = conv1x1(AdaptiveAvgPool_s(x_r))``, ``s * s`` vectors.
- **Global-guided local affinity**: ``a_i = sigmoid(conv1x1(x_r,i + GAP(x_r)))`` in
  ``R^{s * s}``, one weight per region for each position ``i`` (local feature plus the
  global descriptor).
- **Adaptive context** ``z_i = sum_k a_ik y_s,k``, added to the reduced features:
  ``x_r + z``.

APCNet runs one ACM per scale (paper: 1, 2, 3, 6) in parallel and fuses their outputs with
the input; here ``fuse([x; ACM_1(x); ACM_2(x); ...])`` (1x1 conv + BN to ``C``) is a
residual branch whose BN has zero gamma and beta, ``y = x + fuse(...)``, so the block is
exactly the identity at init (in the paper the fused map is the head's output).

Registered as ``"apc"``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from soft_baselines._checks import check_feature_map, check_positive_int
from soft_baselines._maps import adjoint, received
from soft_baselines.registry import register

__all__ = ["AdaptiveContextModule", "AdaptivePyramidContext"]


class AdaptiveContextModule(nn.Module):
    """One ACM at scale ``s``: ``(B, C, H, W) -> (B, C', H, W)``, ``x_r + A y_s``."""

    def __init__(self, channels: int, inter_channels: int, scale: int) -> None:
        super().__init__()
        check_positive_int("channels", channels)
        self.inter_channels = check_positive_int("inter_channels", inter_channels)
        self.scale = check_positive_int("scale", scale)
        self.reduce = nn.Sequential(
            nn.Conv2d(channels, inter_channels, 1, bias=False),
            nn.BatchNorm2d(inter_channels),
            nn.ReLU(inplace=True),
        )
        self.region = nn.Conv2d(inter_channels, inter_channels, 1)
        self.affinity = nn.Conv2d(inter_channels, scale * scale, 1)

    def affinities(self, xr: Tensor) -> Tensor:
        """``a``: ``(B, C', H, W) -> (B, H*W, s*s)`` in ``(0, 1)``."""
        g = xr.mean(dim=(2, 3), keepdim=True)
        return torch.sigmoid(self.affinity(xr + g)).flatten(2).transpose(1, 2)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, H, W) -> (B, C', H, W)``."""
        xr = self.reduce(x)
        y = self.region(F.adaptive_avg_pool2d(xr, self.scale)).flatten(2)  # (B, C', s*s)
        a = self.affinities(xr)  # (B, N, s*s)
        z = (a.to(y.dtype) @ y.transpose(1, 2)).transpose(1, 2)  # (B, C', N)
        return xr + z.reshape(xr.shape)


@register("apc", spatial_map=True)
class AdaptivePyramidContext(nn.Module):
    """APCNet's adaptive pyramid context: ACMs at several scales, fused residually.

    Shapes: ``(B, C, H, W) -> (B, C, H, W)``; cost linear in ``H * W``.

    Args:
        channels: ``C``.
        scales: pooled grid sizes, one ACM each (paper: ``(1, 2, 3, 6)``).
        inter_channels: ``C'`` of every ACM (default ``max(1, C // 4)``).

    Initialisation: PyTorch defaults except the fuse BN (gamma = beta = 0): exactly the
    identity at init.
    """

    def __init__(
        self,
        channels: int,
        scales: tuple[int, ...] = (1, 2, 3, 6),
        inter_channels: int | None = None,
    ) -> None:
        super().__init__()
        self.channels = check_positive_int("channels", channels)
        if not scales:
            raise ValueError("scales must be a non-empty tuple of positive ints")
        ci = max(1, channels // 4) if inter_channels is None else inter_channels
        self.inter_channels = check_positive_int("inter_channels", ci)
        self.acms = nn.ModuleList(AdaptiveContextModule(channels, ci, s) for s in scales)
        self.scales = tuple(m.scale for m in self.acms)
        self.fuse = nn.Sequential(
            nn.Conv2d(channels + len(scales) * ci, channels, 1, bias=False),
            nn.BatchNorm2d(channels),
        )
        nn.init.zeros_(self.fuse[1].weight)
        nn.init.zeros_(self.fuse[1].bias)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, H, W) -> (B, C, H, W)``."""
        check_feature_map(x, self.channels, type(self).__name__)
        return x + self.fuse(torch.cat([x, *(acm(x) for acm in self.acms)], dim=1))

    def spatial_map(self, x: Tensor) -> Tensor:
        """Attention received per position: at each scale, every region's column sum of the
        affinities ``a`` over all positions, spread over the region's pixels (the adjoint
        of the adaptive pooling) and normalised to sum 1; the mean over the scales.
        ``(B, C, H, W) -> (B, H, W)`` (scale 1 contributes a uniform share)."""
        check_feature_map(x, self.channels, type(self).__name__)
        h, w = x.shape[2:]
        maps = []
        for acm in self.acms:
            mass = received(acm.affinities(acm.reduce(x)))  # (B, s*s)
            r = adjoint(lambda p, s=acm.scale: F.adaptive_avg_pool2d(p, s).flatten(1), mass, h, w)
            maps.append(r / r.sum(dim=(1, 2), keepdim=True).clamp_min(torch.finfo(r.dtype).tiny))
        return torch.stack(maps).mean(dim=0)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, scales={self.scales}, inter={self.inter_channels}"
