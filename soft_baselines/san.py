"""Self-attention networks: pairwise and patchwise vector self-attention in local footprints.

Zhao, Jia, Koltun (2020), *Exploring Self-attention for Image Recognition* (CVPR 2020;
arXiv:2004.13621). ``y_i = sum_{j in R(i)} alpha_ij (.) beta(x_j)``: ``R(i)`` the ``k x k``
footprint of ``i`` (paper: ``k = 7``), ``beta`` a 1x1 conv, ``(.)`` the Hadamard product and
``alpha`` a *vector* of weights, one per group of ``share`` channels (weight sharing,
paper: 8), normalised by a softmax over the footprint:

- **Pairwise** (``"san_pairwise"``): ``alpha_ij = gamma(delta(x_i, x_j))`` with the
  subtraction relation ``delta = phi(x_i) - psi(x_j)`` (the paper's best), concatenated with
  the position encoding ``P(p_i) - P(p_j)`` (``p`` the coordinates normalised to
  ``[-1, 1]``, ``P`` a learnt linear map to 2 channels), and ``gamma`` the mapping
  ``BN-ReLU-conv1x1-BN-ReLU-conv1x1`` to ``C / share`` channels.
- **Patchwise** (``"san_patchwise"``): ``alpha_i = gamma([phi(x_i), psi(x_j) for j in
  R(i)])`` (concatenation relation): the weights for the whole footprint come from one
  mapping of the concatenated patch, ``gamma`` going to ``(C / share) * k^2`` channels.

Neighbours outside the map are left out of the softmax. In the paper the operator replaces
the spatial convolution of a bottleneck; here the block is ``x + BN(W_o y)`` with the BN
zero-initialised, exactly the identity at init.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from soft_baselines._checks import (
    bottleneck_width,
    channel_groups,
    check_feature_map,
    check_odd_kernel,
    check_positive_int,
)
from soft_baselines._local import neighbourhoods, valid_neighbours
from soft_baselines._maps import window_received
from soft_baselines.registry import register

__all__ = ["PairwiseSelfAttention", "PatchwiseSelfAttention", "SelfAttention"]


def _gamma(c_in: int, mid: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.BatchNorm2d(c_in),
        nn.ReLU(),
        nn.Conv2d(c_in, mid, 1, bias=False),
        nn.BatchNorm2d(mid),
        nn.ReLU(),
        nn.Conv2d(mid, c_out, 1),
    )


def normalised_coordinates(h: int, w: int, device=None, dtype=None) -> Tensor:
    """``(1, 2, H, W)``: row and column coordinates scaled to ``[-1, 1]`` (0 for size 1)."""

    def axis(n: int) -> Tensor:
        return (
            torch.linspace(-1.0, 1.0, n, device=device, dtype=dtype)
            if n > 1
            else (torch.zeros(1, device=device, dtype=dtype))
        )

    ys, xs = torch.meshgrid(axis(h), axis(w), indexing="ij")
    return torch.stack([ys, xs])[None]


class SelfAttention(nn.Module):
    """SAN self-attention block ``x + BN(W_o SA(x))``; ``mode`` pairwise or patchwise.

    Shapes: ``(B, C, H, W) -> (B, C, H, W)``; cost ``O(H W k^2 C)``.

    Args:
        channels: ``C``.
        mode: ``"pairwise"`` or ``"patchwise"``.
        kernel_size: odd footprint side ``k`` (paper: 7).
        share: channels sharing one attention weight (must divide ``C``; default the
            largest divisor of ``C`` not above 8, the paper's value).
        rel_channels: width of ``phi`` and ``psi`` and of gamma's hidden layer (default
            ``max(C // 8, min(4, C))``: a width of 1 or 2 behind gamma's ReLU can switch
            off for every relation, cutting ``phi`` and ``psi`` off from the gradient).
    """

    def __init__(
        self,
        channels: int,
        mode: Literal["pairwise", "patchwise"] = "pairwise",
        kernel_size: int = 7,
        share: int | None = None,
        rel_channels: int | None = None,
    ) -> None:
        super().__init__()
        self.channels = check_positive_int("channels", channels)
        if mode not in ("pairwise", "patchwise"):
            raise ValueError(f"mode must be 'pairwise' or 'patchwise', got {mode!r}")
        check_odd_kernel("kernel_size", kernel_size)
        share = channel_groups("share", channels, share)
        r = bottleneck_width(channels, 8, 4) if rel_channels is None else rel_channels
        self.rel_channels = check_positive_int("rel_channels", r)
        self.mode = mode
        self.kernel_size = kernel_size
        self.share = share
        kk = kernel_size * kernel_size
        groups = channels // share
        self.phi = nn.Conv2d(channels, r, 1)
        self.psi = nn.Conv2d(channels, r, 1)
        self.beta = nn.Conv2d(channels, channels, 1)
        if mode == "pairwise":
            self.position = nn.Linear(2, 2, bias=False)  # P; its bias would cancel in P_i - P_j
            self.gamma = _gamma(r + 2, r, groups)
        else:
            self.position = None
            self.gamma = _gamma(r * (kk + 1), r, groups * kk)
        self.out = nn.Conv2d(channels, channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(channels)
        nn.init.zeros_(self.bn.weight)
        nn.init.zeros_(self.bn.bias)

    def weights(self, x: Tensor) -> Tensor:
        """``alpha``: ``(B, C / share, k*k, H*W)``, summing to 1 over the footprint."""
        check_feature_map(x, self.channels, type(self).__name__)
        b, _, h, w = x.shape
        k, kk = self.kernel_size, self.kernel_size**2
        q = self.phi(x).flatten(2)  # (B, r, N)
        keys = neighbourhoods(self.psi(x), k)  # (B, r, k*k, N)
        if self.position is not None:
            coords = normalised_coordinates(h, w, x.device, q.dtype)
            rel = coords.flatten(2)[:, :, None, :] - neighbourhoods(coords, k)  # (1,2,kk,N)
            pos = self.position(rel.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
            delta = torch.cat([q[:, :, None, :] - keys, pos.expand(b, -1, -1, -1)], dim=1)
            logits = self.gamma(delta)  # (B, C/share, k*k, N)
        else:
            # [phi(x_i), psi(x_j1), psi(x_j2), ...]: one r-vector per footprint entry
            patch = torch.cat([q, keys.transpose(1, 2).flatten(1, 2)], dim=1)  # (B, r(1+kk), N)
            logits = self.gamma(patch[..., None])[..., 0]  # (B, C/share * kk, N)
            logits = logits.view(b, -1, kk, h * w)
        inside = valid_neighbours(h, w, k, device=x.device)
        return torch.softmax(logits.masked_fill(~inside, float("-inf")), dim=2)

    def spatial_map(self, x: Tensor) -> Tensor:
        """Attention received per position: the footprint weights ``alpha`` every position
        gives it, summed over the footprints that contain it and averaged over the
        ``C / share`` weight groups, ``(B, C, H, W) -> (B, H, W)``."""
        h, w = x.shape[2:]
        return window_received(self.weights(x).mean(dim=1), h, w, self.kernel_size)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, H, W) -> (B, C, H, W)``."""
        a = self.weights(x)  # (B, G, k*k, N)
        b, c, h, w = x.shape
        v = neighbourhoods(self.beta(x), self.kernel_size)  # (B, C, k*k, N)
        v = v.view(b, c // self.share, self.share, *v.shape[2:])
        y = (v * a[:, :, None].to(v.dtype)).sum(dim=3).reshape(b, c, h, w)
        return x + self.bn(self.out(y))

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, mode={self.mode!r}, kernel_size={self.kernel_size}, "
            f"share={self.share}, rel_channels={self.rel_channels}"
        )


@register("san_pairwise", spatial_map=True)
class PairwiseSelfAttention(SelfAttention):
    """SAN pairwise self-attention (subtraction relation, position encoding), residual."""

    def __init__(self, channels: int, **kwargs) -> None:
        if "mode" in kwargs:
            raise TypeError("san_pairwise fixes mode='pairwise'")
        super().__init__(channels, mode="pairwise", **kwargs)


@register("san_patchwise", spatial_map=True)
class PatchwiseSelfAttention(SelfAttention):
    """SAN patchwise self-attention (concatenation relation over the footprint), residual."""

    def __init__(self, channels: int, **kwargs) -> None:
        if "mode" in kwargs:
            raise TypeError("san_patchwise fixes mode='patchwise'")
        super().__init__(channels, mode="patchwise", **kwargs)
