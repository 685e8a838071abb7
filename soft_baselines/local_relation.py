"""Local relation layer: aggregation weights from appearance composability and geometry.

Hu, Zhang, Xie, Lin (2019), *Local Relation Networks for Image Recognition* (ICCV 2019;
arXiv:1904.11491). Within the ``k x k`` window ``Omega_p`` of each position ``p`` (paper:
``k = 7``) and for each of ``m`` channel groups (heads), the weight of neighbour ``p'`` is

``omega(p', p) = softmax_{p' in Omega_p}(Phi(q_p, k_p') + f_geo(p - p'))``

- **Appearance composability** ``Phi(q, k) = -(q - k)^2`` of a query ``q = W_q x_p`` and a
  key ``k = W_k x_p'`` (1x1 convs, one channel per head);
- **Geometric prior** ``f_geo``: a two-layer MLP of the relative position (2 -> hidden ->
  ``m``, ReLU between), learnt;
- the output is ``y_p = sum_{p'} omega(p', p) v_p'`` with ``v = W_v x`` and each head's
  weights shared by its ``C / m`` channels.

Neighbours outside the map are excluded from the softmax. The block is
``x + BN(W_o y)`` with the BN zero-initialised (the paper replaces the 3x3 convolution of
a bottleneck by the layer; here it is a residual drop-in), exactly the identity at init.

Registered as ``"local_relation"``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from soft_baselines._checks import (
    channel_groups,
    check_feature_map,
    check_odd_kernel,
    check_positive_int,
)
from soft_baselines._local import neighbourhoods, relative_offsets, valid_neighbours
from soft_baselines._maps import window_received
from soft_baselines.registry import register

__all__ = ["LocalRelation"]


@register("local_relation", spatial_map=True)
class LocalRelation(nn.Module):
    """Local relation layer ``x + BN(W_o LR(x))``, exactly the identity at init.

    Shapes: ``(B, C, H, W) -> (B, C, H, W)``; cost ``O(H W k^2 C)``.

    Args:
        channels: ``C``.
        kernel_size: odd window side ``k`` (paper: 7).
        heads: ``m``, channel groups sharing one aggregation weight (must divide ``C``;
            default: the largest divisor of ``C`` not above 8).
        geo_hidden: hidden width of the geometric-prior MLP (default 16).
    """

    def __init__(
        self,
        channels: int,
        kernel_size: int = 7,
        heads: int | None = None,
        geo_hidden: int = 16,
    ) -> None:
        super().__init__()
        self.channels = check_positive_int("channels", channels)
        check_odd_kernel("kernel_size", kernel_size)
        heads = channel_groups("heads", channels, heads)
        check_positive_int("geo_hidden", geo_hidden)
        self.kernel_size = kernel_size
        self.heads = heads
        self.query = nn.Conv2d(channels, heads, 1)
        self.key = nn.Conv2d(channels, heads, 1)
        self.value = nn.Conv2d(channels, channels, 1)
        self.geo = nn.Sequential(nn.Linear(2, geo_hidden), nn.ReLU(), nn.Linear(geo_hidden, heads))
        self.out = nn.Conv2d(channels, channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(channels)
        nn.init.zeros_(self.bn.weight)
        nn.init.zeros_(self.bn.bias)

    def weights(self, x: Tensor) -> Tensor:
        """Aggregation weights ``(B, m, k*k, H*W)``, summing to 1 over the window."""
        check_feature_map(x, self.channels, type(self).__name__)
        k = self.kernel_size
        h, w = x.shape[2:]
        q = self.query(x).flatten(2)[:, :, None, :]  # (B, m, 1, N)
        keys = neighbourhoods(self.key(x), k)  # (B, m, k*k, N)
        app = -(q - keys).square()
        offsets = relative_offsets(k, device=x.device).to(app.dtype)  # (k*k, 2)
        geo = self.geo(offsets).transpose(0, 1)[None, :, :, None]  # (1, m, k*k, 1)
        logits = app + geo.to(app.dtype)
        inside = valid_neighbours(h, w, k, device=x.device)  # (k*k, N)
        logits = logits.masked_fill(~inside, float("-inf"))
        return torch.softmax(logits, dim=2)

    def spatial_map(self, x: Tensor) -> Tensor:
        """Attention received per position: the aggregation weights every window gives it,
        summed over the windows that contain it and averaged over the ``m`` heads,
        ``(B, C, H, W) -> (B, H, W)``."""
        h, w = x.shape[2:]
        return window_received(self.weights(x).mean(dim=1), h, w, self.kernel_size)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, H, W) -> (B, C, H, W)``."""
        a = self.weights(x)  # (B, m, k*k, N)
        b, c, h, w = x.shape
        v = neighbourhoods(self.value(x), self.kernel_size)  # (B, C, k*k, N)
        v = v.view(b, self.heads, c // self.heads, *v.shape[2:])
        y = (v * a[:, :, None].to(v.dtype)).sum(dim=3).reshape(b, c, h, w)
        return x + self.bn(self.out(y))

    def extra_repr(self) -> str:
        return f"channels={self.channels}, kernel_size={self.kernel_size}, heads={self.heads}"
