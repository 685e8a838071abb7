"""Polarized self-attention: channel-only and spatial-only branches, each kept at high resolution.

Liu, Xu, Yang, Chen, Wu (2021), *Polarized Self-Attention: Towards High-quality
Pixel-wise Regression* (arXiv:2107.00782; Neurocomputing 2022). Two branches, each
collapsing one dimension completely while keeping the other at full resolution:

- **Channel-only** ``A_ch(X) = sigmoid(LN(W_z(sigma_1(W_v X) x softmax(sigma_2(W_q X)))))``
  in ``R^{C x 1 x 1}``: ``W_q`` a 1x1 conv to one channel, softmax over the ``H W``
  positions; ``W_v`` a 1x1 conv to ``C / 2`` channels; their product is a ``C / 2`` vector,
  ``W_z`` a 1x1 conv back to ``C``, layer norm, sigmoid.
- **Spatial-only** ``A_sp(X) = sigmoid(sigma_3(softmax(sigma_1(GAP(W_q X)))) x
  sigma_2(W_v X))`` in ``R^{1 x H x W}``: ``W_q`` and ``W_v`` 1x1 convs to ``C / 2``;
  the pooled queries go through a softmax over channels, and their dot product with the
  values at each position is the spatial gate.
- **Layouts**: parallel ``Z = A_ch(X) * X + A_sp(X) * X``; sequential
  ``Z = A_sp(Y) * Y`` with ``Y = A_ch(X) * X``.

Registered as ``"polarized"`` (``layout`` picks parallel or sequential).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from soft_baselines._checks import check_feature_map, check_positive_int
from soft_baselines.registry import register

__all__ = ["PolarizedSelfAttention"]


@register("polarized", spatial_map=True)
class PolarizedSelfAttention(nn.Module):
    """Polarized self-attention: channel-only and spatial-only sigmoid gates, in parallel or
    in sequence.

    Shapes: ``(B, C, H, W) -> (B, C, H, W)``; cost linear in ``H * W``.

    Args:
        channels: ``C``.
        layout: ``"parallel"`` (paper's PSA_p, default) or ``"sequential"`` (PSA_s).
        inter_channels: width of ``W_v`` and the spatial ``W_q`` (default ``max(1, C // 2)``).

    Initialisation: PyTorch defaults. Like SE the block is a gate on the input, not a
    residual branch, as in the paper (which puts it on a ResNet's residual branch): at
    init the parallel layout is roughly ``x`` (two gates near 0.5 added) and the
    sequential one roughly ``x / 4``.
    """

    def __init__(
        self,
        channels: int,
        layout: Literal["parallel", "sequential"] = "parallel",
        inter_channels: int | None = None,
    ) -> None:
        super().__init__()
        self.channels = check_positive_int("channels", channels)
        if layout not in ("parallel", "sequential"):
            raise ValueError(f"layout must be 'parallel' or 'sequential', got {layout!r}")
        ci = max(1, channels // 2) if inter_channels is None else inter_channels
        self.inter_channels = check_positive_int("inter_channels", ci)
        self.layout = layout
        self.ch_q = nn.Conv2d(channels, 1, 1)
        self.ch_v = nn.Conv2d(channels, ci, 1)
        self.ch_z = nn.Conv2d(ci, channels, 1)
        self.ch_norm = nn.LayerNorm(channels)
        self.sp_q = nn.Conv2d(channels, ci, 1)
        self.sp_v = nn.Conv2d(channels, ci, 1)

    def channel_gate(self, x: Tensor) -> Tensor:
        """``A_ch``: ``(B, C, H, W) -> (B, C, 1, 1)`` in ``(0, 1)``."""
        q = torch.softmax(self.ch_q(x).flatten(2), dim=-1)  # (B, 1, N)
        v = self.ch_v(x).flatten(2)  # (B, C', N)
        z = self.ch_z((v @ q.transpose(1, 2).to(v.dtype)).unsqueeze(-1))  # (B, C, 1, 1)
        return torch.sigmoid(self.ch_norm(z.flatten(1))).view_as(z)

    def spatial_gate(self, x: Tensor) -> Tensor:
        """``A_sp``: ``(B, C, H, W) -> (B, 1, H, W)`` in ``(0, 1)``."""
        q = torch.softmax(self.sp_q(x).mean(dim=(2, 3)), dim=-1)  # (B, C')
        v = self.sp_v(x).flatten(2)  # (B, C', N)
        a = q.unsqueeze(1).to(v.dtype) @ v  # (B, 1, N)
        return torch.sigmoid(a).view(x.shape[0], 1, *x.shape[2:])

    def spatial_map(self, x: Tensor) -> Tensor:
        """The spatial-only gate ``A_sp`` itself, on the input it gates (``x`` in the
        parallel layout, ``A_ch(x) * x`` in the sequential one): ``(B, C, H, W) -> (B, H,
        W)`` in ``(0, 1)``."""
        check_feature_map(x, self.channels, type(self).__name__)
        if self.layout == "sequential":
            x = x * self.channel_gate(x).to(x.dtype)
        return self.spatial_gate(x)[:, 0]

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, H, W) -> (B, C, H, W)``."""
        check_feature_map(x, self.channels, type(self).__name__)
        if self.layout == "parallel":
            return x * self.channel_gate(x).to(x.dtype) + x * self.spatial_gate(x).to(x.dtype)
        y = x * self.channel_gate(x).to(x.dtype)
        return y * self.spatial_gate(y).to(y.dtype)

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, layout={self.layout!r}, "
            f"inter_channels={self.inter_channels}"
        )
