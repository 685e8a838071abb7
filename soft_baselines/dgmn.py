"""Dynamic graph message passing: each node passes messages to a few sampled neighbours.

Zhang, Xu, Arnab, Torr (2020), *Dynamic Graph Message Passing Networks* (CVPR 2020;
arXiv:1908.06955). Instead of a fully connected graph over the ``N = H W`` positions,
each node ``i`` exchanges messages with ``S`` neighbourhoods of ``K`` nodes each:

- **Uniform sampling**: neighbourhood ``s`` is the ``3 x 3`` grid (``K = 9``) around ``i``
  at sampling rate (dilation) ``d_s``.
- **Walks** (adaptive sampling): each of the ``K`` nodes is moved by a predicted offset
  ``Delta_ik`` conditioned on the input, and its features are read by bilinear
  interpolation (zero outside the map).
- **Dynamic message calculation**: node-dependent filter weights ``w_ik`` (predicted from
  ``x_i``, one per sampled node and channel group) and affinities
  ``A_ik = softmax_k(q_i . k_ik / sqrt(d))`` between ``i`` and its sampled nodes;
  message ``m^s_i = sum_k A_ik w_ik (.) v_ik``.
- **Update**: ``x_i + sum_s beta_s m^s_i`` with learnt message scales ``beta_s``.

What differs from the paper, by choice: the offsets of neighbourhood ``s`` come from a
``3 x 3`` convolution with dilation ``d_s``, i.e. from the features of its uniformly
sampled nodes (as in deformable convolution), initialised to zero so sampling starts
uniform; the filter weights are per channel group (``groups``) rather than a full
per-node convolution; the update goes through ``BN(W_o sum_s beta_s m^s)`` with the BN
zero-initialised, so the block is exactly the identity at init.

Fast path: all ``K`` nodes of a neighbourhood are read by one ``grid_sample``; the tests
compare it with bilinear interpolation written out.

Registered as ``"dgmn"``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from soft_baselines._checks import channel_groups, check_feature_map, check_positive_int
from soft_baselines._local import relative_offsets
from soft_baselines._maps import adjoint
from soft_baselines.registry import register

__all__ = ["DynamicGraphMessagePassing", "sample_nodes"]

K = 9  # a 3 x 3 neighbourhood


def sample_nodes(x: Tensor, positions: Tensor) -> Tensor:
    """Bilinear read of ``x`` at fractional pixel ``positions``, zero outside the map.

    ``x (B, C, H, W)``, ``positions (B, K, N, 2)`` as ``(row, col)`` -> ``(B, C, K, N)``.
    """
    h, w = x.shape[2:]
    # Pixel centres at (2 p + 1) / size - 1 (align_corners=False), valid for size 1 too.
    gy = (2 * positions[..., 0] + 1) / h - 1
    gx = (2 * positions[..., 1] + 1) / w - 1
    grid = torch.stack([gx, gy], dim=-1).to(x.dtype)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


@register("dgmn", spatial_map=True)
class DynamicGraphMessagePassing(nn.Module):
    """DGMN block: messages from ``S`` adaptively sampled 3x3 neighbourhoods, residual.

    Shapes: ``(B, C, H, W) -> (B, C, H, W)``; cost ``O(H W S K C)``.

    Args:
        channels: ``C``.
        dilations: sampling rate ``d_s`` of each neighbourhood (default ``(1, 4, 8)``).
        key_channels: ``d``, width of queries and keys (default ``max(1, C // 4)``).
        groups: channel groups of the dynamic filter weights (must divide ``C``; default
            the largest divisor of ``C`` not above 8).
    """

    def __init__(
        self,
        channels: int,
        dilations: tuple[int, ...] = (1, 4, 8),
        key_channels: int | None = None,
        groups: int | None = None,
    ) -> None:
        super().__init__()
        self.channels = check_positive_int("channels", channels)
        if not dilations:
            raise ValueError("dilations must be a non-empty tuple of positive ints")
        self.dilations = tuple(check_positive_int("dilation", d) for d in dilations)
        kc = max(1, channels // 4) if key_channels is None else key_channels
        self.key_channels = check_positive_int("key_channels", kc)
        groups = channel_groups("groups", channels, groups)
        self.groups = groups
        s = len(self.dilations)
        self.query = nn.Conv2d(channels, kc, 1)
        self.key = nn.Conv2d(channels, kc, 1)
        self.value = nn.Conv2d(channels, channels, 1)
        self.offsets = nn.ModuleList(
            nn.Conv2d(channels, 2 * K, 3, padding=d, dilation=d) for d in self.dilations
        )
        for conv in self.offsets:
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)
        self.filters = nn.Conv2d(channels, s * K * groups, 1)
        self.beta = nn.Parameter(torch.ones(s))
        self.out = nn.Conv2d(channels, channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(channels)
        nn.init.zeros_(self.bn.weight)
        nn.init.zeros_(self.bn.bias)

    def positions(self, x: Tensor, s: int) -> Tensor:
        """Sampled node positions of neighbourhood ``s``: ``(B, K, N, 2)`` as (row, col)."""
        b, _, h, w = x.shape
        ys, xs = torch.meshgrid(
            torch.arange(h, device=x.device), torch.arange(w, device=x.device), indexing="ij"
        )
        centre = torch.stack([ys.reshape(-1), xs.reshape(-1)], dim=-1)  # (N, 2)
        grid = relative_offsets(3, self.dilations[s], device=x.device)  # (K, 2)
        delta = self.offsets[s](x).view(b, K, 2, h * w).transpose(2, 3)  # (B, K, N, 2)
        return (centre[None, None] + grid[None, :, None]).to(delta.dtype) + delta

    def spatial_map(self, x: Tensor) -> Tensor:
        """Attention received per position, ``(B, C, H, W) -> (B, H, W)``: every node's
        affinities ``A_ik`` to its ``K`` sampled nodes, spread over the pixels each sampled
        node is read from (the adjoint of the bilinear read, so a node between pixels
        shares its weight as the read does), summed over all nodes; the mean over the
        ``S`` neighbourhoods. The dynamic filter weights are left out."""
        check_feature_map(x, self.channels, type(self).__name__)
        h, w = x.shape[2:]
        q = self.query(x).flatten(2)[:, :, None, :]  # (B, d, 1, N)
        keys = self.key(x)
        total = x.new_zeros(0)
        for s in range(len(self.dilations)):
            pos = self.positions(x, s).detach()
            k = sample_nodes(keys, pos)  # (B, d, K, N)
            a = torch.softmax((q * k).sum(dim=1) / math.sqrt(self.key_channels), dim=1)
            got = adjoint(lambda p, pos=pos: sample_nodes(p, pos)[:, 0], a, h, w)
            total = got if s == 0 else total + got
        return total / len(self.dilations)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, H, W) -> (B, C, H, W)``."""
        check_feature_map(x, self.channels, type(self).__name__)
        b, c, h, w = x.shape
        n, g = h * w, self.groups
        q = self.query(x).flatten(2)[:, :, None, :]  # (B, d, 1, N)
        keys, values = self.key(x), self.value(x)
        filters = self.filters(x).view(b, len(self.dilations), g, K, n)
        message = x.new_zeros(b, c, n)
        for s in range(len(self.dilations)):
            pos = self.positions(x, s)
            k = sample_nodes(keys, pos)  # (B, d, K, N)
            v = sample_nodes(values, pos).view(b, g, c // g, K, n)
            a = torch.softmax((q * k).sum(dim=1) / math.sqrt(self.key_channels), dim=1)
            weights = a[:, None] * filters[:, s]  # (B, G, K, N)
            m = (v * weights[:, :, None].to(v.dtype)).sum(dim=3).reshape(b, c, n)
            message = message + self.beta[s].to(m.dtype) * m
        return x + self.bn(self.out(message.view(b, c, h, w)))

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, dilations={self.dilations}, "
            f"key_channels={self.key_channels}, groups={self.groups}"
        )
