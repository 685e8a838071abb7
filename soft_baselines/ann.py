"""Asymmetric non-local blocks: keys and values sampled at a few pyramid-pooled anchors.

Zhu, Xu, Bai, Huang, Bai (2019), *Asymmetric Non-local Neural Networks for Semantic
Segmentation* (ICCV 2019; arXiv:1908.07678). A non-local block whose keys and values are
not the ``N = H W`` positions but ``S`` anchors from spatial pyramid pooling: adaptive
average pooling to ``s x s`` for each ``s`` in ``sizes`` (paper: 1, 3, 6, 8, so
``S = 110``), concatenated. Attention costs ``O(N S)`` instead of ``O(N^2)``:

``c_p = W sum_j softmax_j(q_p . k_j / sqrt(d)) v_j``, ``q = f(x)``, ``k = P(f(x))``,
``v = P(phi(x))`` with ``P`` the pyramid sampling, ``f`` a 1x1 conv + BN + ReLU shared by
queries and keys, ``phi`` a 1x1 conv.

- **APNB** (``"apnb"``, asymmetric pyramid non-local block): queries, keys and values from
  the same map; output ``fuse([c; x])``.
- **AFNB** (``"afnb"``, asymmetric fusion non-local block): queries from the (high-level)
  input, keys and values from a second (low-level) map; output ``fuse([c; x])``. Called
  with one argument it uses the input for both (drop-in form); ``block(x, low)`` fuses two
  stages as in the paper (``low`` may differ in channels, ``low_channels``, and size).

``fuse`` is a 1x1 conv + BN to ``C`` channels. In the paper its output (after dropout) is
the block's output; here it is a residual branch with zero-initialised BN, ``y = x +
fuse(...)``, so the block is exactly the identity at init.
"""

from __future__ import annotations

import abc
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from soft_baselines._checks import check_feature_map, check_positive_int
from soft_baselines._maps import adjoint, received
from soft_baselines.registry import register

__all__ = ["AsymmetricFusionNonLocal", "AsymmetricPyramidNonLocal", "pyramid_sample"]

SIZES = (1, 3, 6, 8)


def pyramid_sample(x: Tensor, sizes: tuple[int, ...]) -> Tensor:
    """Adaptive average pooling to each ``s x s``, flattened and concatenated:
    ``(B, C, H, W) -> (B, C, S)`` with ``S = sum(s * s)``."""
    return torch.cat([F.adaptive_avg_pool2d(x, s).flatten(2) for s in sizes], dim=2)


def _check_sizes(sizes: tuple[int, ...]) -> tuple[int, ...]:
    if not sizes:
        raise ValueError("sizes must be a non-empty tuple of positive ints")
    return tuple(check_positive_int("size", s) for s in sizes)


class _AsymmetricNonLocal(nn.Module, abc.ABC):
    """Shared machinery: queries from ``x``, pyramid-sampled keys/values from ``low``."""

    def __init__(
        self,
        channels: int,
        low_channels: int,
        key_channels: int | None,
        value_channels: int | None,
        sizes: tuple[int, ...],
    ) -> None:
        super().__init__()
        self.channels = check_positive_int("channels", channels)
        self.low_channels = check_positive_int("low_channels", low_channels)
        kc = max(1, channels // 2) if key_channels is None else key_channels
        vc = max(1, channels // 2) if value_channels is None else value_channels
        self.key_channels = check_positive_int("key_channels", kc)
        self.value_channels = check_positive_int("value_channels", vc)
        self.sizes = _check_sizes(sizes)
        self.out = nn.Conv2d(vc, channels, 1)  # W
        self.fuse = nn.Sequential(
            nn.Conv2d(2 * channels, channels, 1, bias=False), nn.BatchNorm2d(channels)
        )
        nn.init.zeros_(self.fuse[1].weight)
        nn.init.zeros_(self.fuse[1].bias)

    @abc.abstractmethod
    def embed(self, x: Tensor, low: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Queries ``(B, N, d)``, keys ``(B, S, d)`` and values ``(B, S, c)`` (APNB and AFNB
        each define theirs)."""

    def context(self, x: Tensor, low: Tensor) -> Tensor:
        """``c = W softmax(q k^T / sqrt(d)) v``: ``(B, C, H, W)``."""
        q, k, v = self.embed(x, low)
        y = F.scaled_dot_product_attention(
            q.to(v.dtype), k.to(v.dtype), v, scale=1.0 / math.sqrt(self.key_channels)
        )
        b, _, h, w = x.shape
        return self.out(y.transpose(1, 2).reshape(b, self.value_channels, h, w))

    def _checked_low(self, x: Tensor, low: Tensor | None) -> Tensor:
        check_feature_map(x, self.channels, type(self).__name__)
        if low is None:
            low = x
        check_feature_map(low, self.low_channels, type(self).__name__ + " (low)")
        if low.shape[0] != x.shape[0]:
            raise ValueError(f"batch sizes differ: {x.shape[0]} and {low.shape[0]}")
        return low

    def _forward(self, x: Tensor, low: Tensor | None) -> Tensor:
        low = self._checked_low(x, low)
        return x + self.fuse(torch.cat([self.context(x, low), x], dim=1))

    def spatial_map(self, x: Tensor, low: Tensor | None = None) -> Tensor:
        """Attention received per position of the keys' map (``low``, default ``x``):
        ``(B, H', W')``. Each anchor's column sum of ``softmax(q k^T / sqrt(d))`` over all
        queries is spread over the pixels it averages (the adjoint of the pyramid pooling),
        summed over the pyramid levels."""
        low = self._checked_low(x, low)
        q, k, _ = self.embed(x, low)
        work = torch.promote_types(q.dtype, torch.float32)
        logits = q.to(work) @ k.to(work).transpose(1, 2) / math.sqrt(self.key_channels)
        mass = received(torch.softmax(logits, dim=-1))  # (B, S)
        return adjoint(lambda p: pyramid_sample(p, self.sizes)[:, 0], mass, *low.shape[2:])

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, key_channels={self.key_channels}, "
            f"value_channels={self.value_channels}, sizes={self.sizes}"
        )


@register("apnb", spatial_map=True)
class AsymmetricPyramidNonLocal(_AsymmetricNonLocal):
    """APNB: non-local attention to pyramid-pooled anchors, ``x + fuse([c; x])``.

    Shapes: ``(B, C, H, W) -> (B, C, H, W)``; cost ``O(H W S)``. Exactly the identity at
    init.

    Args:
        channels: ``C``.
        key_channels, value_channels: widths of ``f`` and ``phi`` (default ``C // 2``).
        sizes: pyramid pooling sizes (paper: ``(1, 3, 6, 8)``).
    """

    def __init__(
        self,
        channels: int,
        key_channels: int | None = None,
        value_channels: int | None = None,
        sizes: tuple[int, ...] = SIZES,
    ) -> None:
        super().__init__(channels, channels, key_channels, value_channels, sizes)
        self.key = nn.Sequential(
            nn.Conv2d(channels, self.key_channels, 1, bias=False),
            nn.BatchNorm2d(self.key_channels),
            nn.ReLU(inplace=True),
        )
        self.value = nn.Conv2d(channels, self.value_channels, 1)

    def embed(self, x: Tensor, low: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        f = self.key(x)
        q = f.flatten(2).transpose(1, 2)
        k = pyramid_sample(f, self.sizes).transpose(1, 2)
        v = pyramid_sample(self.value(x), self.sizes).transpose(1, 2)
        return q, k, v

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, H, W) -> (B, C, H, W)``."""
        return self._forward(x, None)


@register("afnb", spatial_map=True)
class AsymmetricFusionNonLocal(_AsymmetricNonLocal):
    """AFNB: queries from ``x``, pyramid-pooled keys/values from ``low``; ``x + fuse([c; x])``.

    Shapes: ``x (B, C, H, W)``, ``low (B, C_low, H', W')`` (default ``low = x``) ->
    ``(B, C, H, W)``. Exactly the identity at init.

    Args:
        channels: ``C``.
        low_channels: ``C_low`` of the second input (default ``C``).
        key_channels, value_channels: widths of the projections (default ``C // 2``).
        sizes: pyramid pooling sizes (paper: ``(1, 3, 6, 8)``).

    Queries and keys come from different maps, so unlike APNB they use separate
    projections (1x1 conv + BN + ReLU each), as in the paper.
    """

    def __init__(
        self,
        channels: int,
        low_channels: int | None = None,
        key_channels: int | None = None,
        value_channels: int | None = None,
        sizes: tuple[int, ...] = SIZES,
    ) -> None:
        low_channels = channels if low_channels is None else low_channels
        super().__init__(channels, low_channels, key_channels, value_channels, sizes)
        kc, vc = self.key_channels, self.value_channels
        self.query = nn.Sequential(
            nn.Conv2d(channels, kc, 1, bias=False), nn.BatchNorm2d(kc), nn.ReLU(inplace=True)
        )
        self.key = nn.Sequential(
            nn.Conv2d(low_channels, kc, 1, bias=False), nn.BatchNorm2d(kc), nn.ReLU(inplace=True)
        )
        self.value = nn.Conv2d(low_channels, vc, 1)

    def embed(self, x: Tensor, low: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        q = self.query(x).flatten(2).transpose(1, 2)
        k = pyramid_sample(self.key(low), self.sizes).transpose(1, 2)
        v = pyramid_sample(self.value(low), self.sizes).transpose(1, 2)
        return q, k, v

    def forward(self, x: Tensor, low: Tensor | None = None) -> Tensor:
        """``(B, C, H, W)`` (and optionally ``low``) ``-> (B, C, H, W)``."""
        return self._forward(x, low)
