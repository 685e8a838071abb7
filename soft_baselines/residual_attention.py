"""Residual attention: a trunk branch modulated by a bottom-up top-down soft mask.

Wang, Jiang, Qian, Yang, Li, Zhang, Wang, Tang (2017), *Residual Attention Network for
Image Classification* (CVPR 2017; arXiv:1704.06904). An attention module has

- ``p`` pre-processing residual units, then two branches:
- **trunk** ``T(x)``: ``t`` residual units;
- **soft mask** ``M(x)``: bottom-up (max pooling, ``r`` residual units, repeated
  ``depth`` times, with a skip connection by a residual unit at each resolution but the
  lowest), then top-down (bilinear upsampling, adding the skip, ``r`` residual units),
  then ``BN-ReLU-conv1x1`` twice and a sigmoid, so ``M`` in ``(0, 1)`` per channel and
  position;
- **attention residual learning** ``H(x) = (1 + M(x)) * T(x)``;
- ``p`` post-processing residual units.

The paper's hyper-parameters are ``p = 1``, ``t = 2``, ``r = 1``; the mask depth depends on
the stage (3, 2 and 1 downsamplings for the 56x56, 28x28 and 14x14 stages); the default
here is ``depth = 1`` for small maps. Residual units are pre-activation bottlenecks
(``BN-ReLU-conv1x1-BN-ReLU-conv3x3-BN-ReLU-conv1x1``, width ``C / 4``) with the last
convolution zero-initialised, so every unit, the trunk and ``p`` start as the identity.

Registered as ``"residual_attention"``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from soft_baselines._checks import check_feature_map, check_positive_int
from soft_baselines.registry import register

__all__ = ["PreActBottleneck", "ResidualAttention"]


class PreActBottleneck(nn.Module):
    """Pre-activation bottleneck ``x + conv(relu(bn(conv(relu(bn(conv(relu(bn(x)))))))))``.

    Shapes: ``(B, C, H, W) -> (B, C, H, W)``; the last conv is zero-initialised.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        mid = max(1, channels // 4)
        self.body = nn.Sequential(
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.Conv2d(channels, mid, 1, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(),
            nn.Conv2d(mid, mid, 3, padding=1, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(),
            nn.Conv2d(mid, channels, 1, bias=False),
        )
        nn.init.zeros_(self.body[-1].weight)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


def _units(channels: int, n: int) -> nn.Sequential:
    return nn.Sequential(*(PreActBottleneck(channels) for _ in range(n)))


@register("residual_attention", spatial_map=True)
class ResidualAttention(nn.Module):
    """Attention module of the Residual Attention Network: ``(1 + M(x)) * T(x)``.

    Shapes: ``(B, C, H, W) -> (B, C, H, W)`` (any ``H, W``: each downsampling is a 3x3
    max pool with stride 2 and padding 1, and the upsampling returns to the exact size).

    Args:
        channels: ``C``.
        depth: number of max-pool downsamplings in the mask branch (paper: 1 to 3).
        p, t, r: residual units before/after, in the trunk, and per mask step (paper
            1, 2, 1).

    Initialisation: every residual unit is the identity (last conv zero), and so is the
    trunk; the mask's last conv is PyTorch's default, so ``M`` is a sigmoid of small
    values and the module starts as roughly ``1.5 x`` (``1 + M``, never below ``x``), as
    the paper's form implies: not the identity.
    """

    def __init__(self, channels: int, depth: int = 1, p: int = 1, t: int = 2, r: int = 1) -> None:
        super().__init__()
        self.channels = check_positive_int("channels", channels)
        self.depth = check_positive_int("depth", depth)
        for name, v in (("p", p), ("t", t), ("r", r)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ValueError(f"{name} must be a non-negative int, got {v!r}")
        self.pre = _units(channels, p)
        self.trunk = _units(channels, t)
        self.down = nn.ModuleList(_units(channels, r) for _ in range(depth))
        self.skips = nn.ModuleList(_units(channels, 1) for _ in range(depth - 1))
        self.up = nn.ModuleList(_units(channels, r) for _ in range(depth - 1))
        self.mask_out = nn.Sequential(
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 1, bias=False),
        )
        self.post = _units(channels, p)

    def mask(self, x: Tensor) -> Tensor:
        """Soft mask ``M(x)``: ``(B, C, H, W) -> (B, C, H, W)`` in ``(0, 1)``."""
        sizes, skips = [], []
        h = x
        for level, down in enumerate(self.down):
            sizes.append(h.shape[2:])
            h = down(F.max_pool2d(h, 3, stride=2, padding=1))
            if level < self.depth - 1:
                skips.append(self.skips[level](h))
        for level in reversed(range(self.depth)):
            h = F.interpolate(h, size=sizes[level], mode="bilinear", align_corners=False)
            if level > 0:
                h = self.up[level - 1](h + skips[level - 1])
        return torch.sigmoid(self.mask_out(h))

    def spatial_map(self, x: Tensor) -> Tensor:
        """The soft mask ``M`` of the pre-processed input, averaged over channels (``M`` is
        per channel and position; ``(1 + M)`` scales the trunk there): ``(B, C, H, W) ->
        (B, H, W)`` in ``(0, 1)``."""
        check_feature_map(x, self.channels, type(self).__name__)
        return self.mask(self.pre(x)).mean(dim=1)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, H, W) -> (B, C, H, W)``."""
        check_feature_map(x, self.channels, type(self).__name__)
        x = self.pre(x)
        out = (1 + self.mask(x).to(x.dtype)) * self.trunk(x)
        return self.post(out)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, depth={self.depth}"
