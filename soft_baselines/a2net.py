"""A²-Net double attention block.

Paper: Yunpeng Chen, Yannis Kalantidis, Jianshu Li, Shuicheng Yan, Jiashi Feng (2018),
"A²-Nets: Double Attention Networks", NeurIPS 2018.

The block gathers global descriptors with one set of attention maps and distributes them
back to every position with a second set of attention vectors:

- feature maps ``A = φ(X)`` (``m`` channels), attention maps ``B = θ(X)`` (``n`` maps, each
  a softmax over the ``H·W`` positions), attention vectors ``V = ρ(X)`` (``n`` channels, a
  softmax over the ``n`` descriptors at each position);
- gather: ``G = A · softmax(B)ᵀ``, shape ``(m, n)``;
- distribute: ``Z = G · softmax(V)``, shape ``(m, H·W)``;
- a 1×1 convolution maps ``Z`` back to ``C`` channels and the result is added to ``X``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from soft_baselines._checks import check_feature_map, check_positive_int
from soft_baselines.registry import register

__all__ = ["DoubleAttention"]


@register("a2", kind="block", spatial_map=True)
class DoubleAttention(nn.Module):
    """A²-Net double attention block (gather, then distribute), residual.

    Args:
        channels: input/output channels ``C``.
        mid_channels: channels ``m`` of the gathered feature maps; default ``max(1, C // 4)``.
        num_descriptors: number ``n`` of global descriptors; default ``max(1, C // 4)``.

    Shapes: ``(B, C, H, W) -> (B, C, H, W)``.

    Initialisation: the output projection is ``Conv1x1(m → C)`` followed by a BatchNorm
    whose gamma is zero-initialised, so the block starts as the exact identity.
    """

    def __init__(
        self,
        channels: int,
        mid_channels: int | None = None,
        num_descriptors: int | None = None,
    ) -> None:
        super().__init__()
        self.channels = check_positive_int("channels", channels)
        m = max(1, channels // 4) if mid_channels is None else mid_channels
        n = max(1, channels // 4) if num_descriptors is None else num_descriptors
        self.mid_channels = check_positive_int("mid_channels", m)
        self.num_descriptors = check_positive_int("num_descriptors", n)
        self.features = nn.Conv2d(channels, m, 1)  # φ: A
        self.gather_maps = nn.Conv2d(channels, n, 1)  # θ: B
        self.distribute_maps = nn.Conv2d(channels, n, 1)  # ρ: V
        self.proj = nn.Conv2d(m, channels, 1, bias=False)
        self.norm = nn.BatchNorm2d(channels)
        nn.init.zeros_(self.norm.weight)

    def attend(self, x: Tensor) -> Tensor:
        """The double-attention output ``Z`` before projection: ``(B, C, H, W) -> (B, m, H, W)``."""
        b, _, h, w = x.shape
        a = self.features(x).flatten(2)  # (B, m, N)
        soft_dtype = torch.promote_types(a.dtype, torch.float32)
        # Gather: each of the n maps is a distribution over the N positions.
        att_b = torch.softmax(self.gather_maps(x).flatten(2), dim=-1, dtype=soft_dtype)
        # Distribute: at each position a distribution over the n descriptors.
        att_v = torch.softmax(self.distribute_maps(x).flatten(2), dim=1, dtype=soft_dtype)
        g = torch.bmm(a, att_b.to(a.dtype).transpose(1, 2))  # (B, m, n)
        z = torch.bmm(g, att_v.to(g.dtype))  # (B, m, N)
        return z.reshape(b, self.mid_channels, h, w)

    def spatial_map(self, x: Tensor) -> Tensor:
        """Where the descriptors are gathered from: the mean of the ``n`` gather maps
        ``softmax(B)`` (each a distribution over the positions), ``(B, C, H, W) -> (B, H,
        W)``, summing to 1. The distribute step weighs descriptors per position, not
        positions, so it adds nothing spatial."""
        check_feature_map(x, self.channels, type(self).__name__)
        b, _, h, w = x.shape
        logits = self.gather_maps(x).flatten(2)
        att = torch.softmax(logits, dim=-1, dtype=torch.promote_types(logits.dtype, torch.float32))
        return att.mean(dim=1).view(b, h, w)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, H, W) -> (B, C, H, W)``."""
        check_feature_map(x, self.channels, type(self).__name__)
        return x + self.norm(self.proj(self.attend(x)))

    def extra_repr(self) -> str:
        return f"channels={self.channels}, m={self.mid_channels}, n={self.num_descriptors}"
