"""Object context: self-attention over all positions (base-OC), within pyramid regions
(pyramid-OC), and beside dilated convolutions (ASP-OC).

Yuan, Huang, Wang, Zhang, Chen, Wang (2018), *OCNet: Object Context Network for Scene
Parsing* (arXiv:1809.00916; IJCV 2021). The object context of position ``p`` is
``c_p = W sum_i softmax_i(f_q(x_p) . f_k(x_i) / sqrt(d)) phi(x_i)`` with ``f_q = f_k`` one
shared 1x1 conv + BN + ReLU to ``d`` key channels, ``phi`` a 1x1 conv to the value
channels and ``W`` a 1x1 conv back to ``C``. The three modules:

- **Base-OC** (``"oc_base"``): ``fuse([c; x])``, object context concatenated with the input.
- **Pyramid-OC** (``"oc_pyramid"``): the map is split into ``s x s`` regions for each
  ``s`` in ``scales`` (paper: 1, 2, 3, 6) and the context is computed within each region;
  ``fuse([x; c_1; c_2; ...])``. Region ``(i, j)`` of level ``s`` covers rows
  ``floor(i H / s)`` to ``floor((i + 1) H / s)`` (likewise columns); on maps smaller than
  ``s`` some regions are empty and skipped.
- **ASP-OC** (``"oc_asp"``): five parallel branches as in ASPP, one of them base-OC
  (3x3 conv then object context), one a 1x1 conv, three 3x3 convs with ``dilations``
  (paper: 12, 24, 36), each conv + BN + ReLU; ``fuse`` of their concatenation.

``fuse`` is a 1x1 conv + BN to ``C`` channels. In the paper the fused map is the
module's output; here, to keep the drop-in contract, it is a residual branch whose final
BN has zero gamma and beta: ``y = x + fuse(...)``, exactly the identity at init.
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from soft_baselines._checks import check_feature_map, check_positive_int
from soft_baselines._maps import received
from soft_baselines.registry import register

__all__ = ["ASPObjectContext", "BaseObjectContext", "ObjectContext", "PyramidObjectContext"]


def _conv_bn_relu(c_in: int, c_out: int, k: int = 1, dilation: int = 1) -> nn.Sequential:
    pad = dilation * (k // 2)
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, k, padding=pad, dilation=dilation, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


def _zero_fuse(c_in: int, c_out: int) -> nn.Sequential:
    """1x1 conv + BN with gamma = beta = 0: the residual branch starts at exactly zero."""
    fuse = nn.Sequential(nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out))
    nn.init.zeros_(fuse[1].weight)
    nn.init.zeros_(fuse[1].bias)
    return fuse


def region_bounds(size: int, parts: int) -> list[tuple[int, int]]:
    """Non-empty ``[start, stop)`` ranges splitting ``size`` into ``parts`` (floor bounds)."""
    edges = [(i * size) // parts for i in range(parts + 1)]
    return [(a, b) for a, b in itertools.pairwise(edges) if b > a]


class ObjectContext(nn.Module):
    """Object context ``W softmax(f(x) f(x)^T / sqrt(d)) phi(x)``, optionally per region.

    Shapes: ``(B, C_in, H, W) -> (B, C_out, H, W)``.
    """

    def __init__(
        self, in_channels: int, key_channels: int, value_channels: int, out_channels: int
    ) -> None:
        super().__init__()
        for name, v in (
            ("in_channels", in_channels),
            ("key_channels", key_channels),
            ("value_channels", value_channels),
            ("out_channels", out_channels),
        ):
            check_positive_int(name, v)
        self.key_channels = key_channels
        self.key = _conv_bn_relu(in_channels, key_channels)  # f_q = f_k
        self.value = nn.Conv2d(in_channels, value_channels, 1)
        self.out = nn.Conv2d(value_channels, out_channels, 1)

    @staticmethod
    def _attend(k: Tensor, v: Tensor, scale: float) -> Tensor:
        # k: (B, d, h, w), v: (B, c, h, w) -> (B, c, h, w)
        b, _, h, w = k.shape
        q = k.flatten(2).transpose(1, 2)  # (B, hw, d)
        vv = v.flatten(2).transpose(1, 2)  # (B, hw, c)
        y = F.scaled_dot_product_attention(q.to(vv.dtype), q.to(vv.dtype), vv, scale=scale)
        return y.transpose(1, 2).reshape(b, -1, h, w)

    def received(self, x: Tensor, grid: int = 1) -> Tensor:
        """Attention received per position, ``(B, C_in, H, W) -> (B, H, W)``: the column
        sums of ``softmax(f(x) f(x)^T / sqrt(d))`` over the queries of its region (each
        region's map sums to its number of positions)."""
        k = self.key(x)
        b, _, h, w = k.shape
        scale = 1.0 / math.sqrt(self.key_channels)
        got = k.new_zeros(b, h, w, dtype=torch.promote_types(k.dtype, torch.float32))
        bounds = (
            [(0, h, 0, w)]
            if grid == 1
            else [
                (r0, r1, c0, c1)
                for r0, r1 in region_bounds(h, grid)
                for c0, c1 in region_bounds(w, grid)
            ]
        )
        for r0, r1, c0, c1 in bounds:
            q = k[:, :, r0:r1, c0:c1].flatten(2).transpose(1, 2).to(got.dtype)  # (B, n, d)
            mass = received(torch.softmax(q @ q.transpose(1, 2) * scale, dim=-1))
            got[:, r0:r1, c0:c1] = mass.view(b, r1 - r0, c1 - c0)
        return got

    def forward(self, x: Tensor, grid: int = 1) -> Tensor:
        """Context within each of ``grid x grid`` regions (``grid=1``: the whole map)."""
        k, v = self.key(x), self.value(x)
        scale = 1.0 / math.sqrt(self.key_channels)
        if grid == 1:
            ctx = self._attend(k, v, scale)
        else:
            ctx = torch.empty_like(v)
            for r0, r1 in region_bounds(x.shape[2], grid):
                for c0, c1 in region_bounds(x.shape[3], grid):
                    ctx[:, :, r0:r1, c0:c1] = self._attend(
                        k[:, :, r0:r1, c0:c1], v[:, :, r0:r1, c0:c1], scale
                    )
        return self.out(ctx)


def _widths(channels: int, key_channels: int | None, value_channels: int | None):
    kc = max(1, channels // 2) if key_channels is None else key_channels
    vc = max(1, channels // 2) if value_channels is None else value_channels
    return check_positive_int("key_channels", kc), check_positive_int("value_channels", vc)


@register("oc_base", spatial_map=True)
class BaseObjectContext(nn.Module):
    """Base-OC: ``x + fuse([OC(x); x])``, exactly the identity at init.

    Shapes: ``(B, C, H, W) -> (B, C, H, W)``; attention over all ``H W`` positions.

    Args:
        channels: ``C``.
        key_channels, value_channels: widths of ``f`` and ``phi`` (default ``C // 2``).
    """

    def __init__(
        self, channels: int, key_channels: int | None = None, value_channels: int | None = None
    ) -> None:
        super().__init__()
        self.channels = check_positive_int("channels", channels)
        kc, vc = _widths(channels, key_channels, value_channels)
        self.context = ObjectContext(channels, kc, vc, channels)
        self.fuse = _zero_fuse(2 * channels, channels)

    def spatial_map(self, x: Tensor) -> Tensor:
        """Attention received per position (:meth:`ObjectContext.received`), ``(B, C, H,
        W) -> (B, H, W)``."""
        check_feature_map(x, self.channels, type(self).__name__)
        return self.context.received(x)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, H, W) -> (B, C, H, W)``."""
        check_feature_map(x, self.channels, type(self).__name__)
        return x + self.fuse(torch.cat([self.context(x), x], dim=1))


@register("oc_pyramid", spatial_map=True)
class PyramidObjectContext(nn.Module):
    """Pyramid-OC: object context within ``s x s`` regions per scale, fused with the input.

    Shapes: ``(B, C, H, W) -> (B, C, H, W)``; ``x + fuse([x; OC_s1(x); OC_s2(x); ...])``,
    exactly the identity at init.

    Args:
        channels: ``C``.
        scales: region grid sizes (paper: ``(1, 2, 3, 6)``), one context module each.
        key_channels, value_channels: widths of ``f`` and ``phi`` (default ``C // 2``).
    """

    def __init__(
        self,
        channels: int,
        scales: tuple[int, ...] = (1, 2, 3, 6),
        key_channels: int | None = None,
        value_channels: int | None = None,
    ) -> None:
        super().__init__()
        self.channels = check_positive_int("channels", channels)
        if not scales:
            raise ValueError("scales must be a non-empty tuple of positive ints")
        self.scales = tuple(check_positive_int("scale", s) for s in scales)
        kc, vc = _widths(channels, key_channels, value_channels)
        self.contexts = nn.ModuleList(ObjectContext(channels, kc, vc, channels) for _ in scales)
        self.fuse = _zero_fuse((1 + len(scales)) * channels, channels)

    def spatial_map(self, x: Tensor) -> Tensor:
        """Attention received per position within the regions of each scale
        (:meth:`ObjectContext.received`), averaged over the scales, ``(B, C, H, W) -> (B,
        H, W)`` (every scale's map sums to ``H W``)."""
        check_feature_map(x, self.channels, type(self).__name__)
        maps = [oc.received(x, grid=s) for oc, s in zip(self.contexts, self.scales, strict=True)]
        return torch.stack(maps).mean(dim=0)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, H, W) -> (B, C, H, W)``."""
        check_feature_map(x, self.channels, type(self).__name__)
        parts = [x, *(oc(x, grid=s) for oc, s in zip(self.contexts, self.scales, strict=True))]
        return x + self.fuse(torch.cat(parts, dim=1))

    def extra_repr(self) -> str:
        return f"channels={self.channels}, scales={self.scales}"


@register("oc_asp", spatial_map=True)
class ASPObjectContext(nn.Module):
    """ASP-OC: base-OC beside a 1x1 and three dilated 3x3 branches (ASPP), fused.

    Shapes: ``(B, C, H, W) -> (B, C, H, W)``; exactly the identity at init.

    Args:
        channels: ``C``.
        dilations: of the three 3x3 branches (paper: ``(12, 24, 36)`` on 1/8-resolution
            maps); any number of branches is accepted.
        inter_channels: width of every branch (default ``max(1, C // 2)``); the object
            context inside uses half of it for keys and values.
    """

    def __init__(
        self,
        channels: int,
        dilations: tuple[int, ...] = (12, 24, 36),
        inter_channels: int | None = None,
    ) -> None:
        super().__init__()
        self.channels = check_positive_int("channels", channels)
        ci = max(1, channels // 2) if inter_channels is None else inter_channels
        self.inter_channels = check_positive_int("inter_channels", ci)
        self.dilations = tuple(check_positive_int("dilation", d) for d in dilations)
        half = max(1, ci // 2)
        self.context_conv = _conv_bn_relu(channels, ci, 3)
        self.context = ObjectContext(ci, half, half, ci)
        self.branches = nn.ModuleList(
            [_conv_bn_relu(channels, ci, 1)]
            + [_conv_bn_relu(channels, ci, 3, dilation=d) for d in self.dilations]
        )
        self.fuse = _zero_fuse((2 + len(self.dilations)) * ci, channels)

    def spatial_map(self, x: Tensor) -> Tensor:
        """Attention received per position in the object-context branch (on its 3x3 conv
        features; :meth:`ObjectContext.received`), ``(B, C, H, W) -> (B, H, W)``. The
        convolution branches do not attend."""
        check_feature_map(x, self.channels, type(self).__name__)
        return self.context.received(self.context_conv(x))

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, H, W) -> (B, C, H, W)``."""
        check_feature_map(x, self.channels, type(self).__name__)
        parts = [self.context(self.context_conv(x)), *(br(x) for br in self.branches)]
        return x + self.fuse(torch.cat(parts, dim=1))

    def extra_repr(self) -> str:
        return f"channels={self.channels}, dilations={self.dilations}"
