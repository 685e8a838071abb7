"""Compact Generalized Non-local (CGNL) block.

Paper: Kaiyu Yue, Ming Sun, Yuchen Yuan, Feng Zhou, Errui Ding, Fuxin Xu (2018),
"Compact Generalized Non-local Network", NeurIPS 2018.

The generalized non-local operation lets every *element* of the embedded tensor (one
channel at one position) interact with every other: with ``θ, φ, g`` the embeddings of one
channel group flattened to vectors of length ``N = (C'/G)·H·W``,

    y_i = Σ_j f(θ_i, φ_j) g_j,   i, j = 1..N.

Forming ``f`` would cost ``O(N²)``; the paper's compact form factorises the kernel:

- dot product ``f(θ_i, φ_j) = θ_i φ_j`` gives ``y = θ · (φᵀ g)``;
- Gaussian ``f = exp(-γ (θ_i − φ_j)²) = exp(-γθ_i²) exp(-γφ_j²) exp(2γ θ_i φ_j)`` with the
  last factor Taylor-expanded to order ``P``: ``exp(2γθφ) ≈ Σ_{p=0}^{P} α_p² θ^p φ^p``,
  ``α_p² = (2γ)^p / p!``, gives
  ``y_i = exp(-γθ_i²) Σ_p α_p² θ_i^p Σ_j exp(-γφ_j²) φ_j^p g_j``,

which costs ``O(P·N)``. Channels are split into ``G`` groups, each with its own
generalized non-local operation; the result goes through a grouped 1×1 convolution and a
GroupNorm and is added to the input.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from soft_baselines._checks import check_feature_map, check_positive_int
from soft_baselines.registry import register

__all__ = ["CompactGeneralizedNonLocal"]

_KERNELS = ("dot", "gaussian")


@register("cgnl", kind="block", spatial_map=True)
class CompactGeneralizedNonLocal(nn.Module):
    """Compact generalized non-local block (dot-product or Taylor-Gaussian kernel), residual.

    Args:
        channels: input/output channels ``C``.
        planes: embedding channels ``C'`` of ``θ, φ, g``; default ``max(1, C // 2)``.
        groups: channel groups ``G``; must divide both ``planes`` and ``channels``.
            Default: ``gcd(8, planes, channels)`` (8 when compatible).
        kernel: ``"dot"`` or ``"gaussian"``.
        order: Taylor order ``P`` of the Gaussian kernel (terms ``p = 0..P``); default 3.
            Ignored by the dot-product kernel.
        gamma: ``γ = 1/(2σ²)`` of the Gaussian kernel, ``> 0``; default ``1e-4``.
        scale: divide the aggregated response by ``sqrt(N)`` (``N = (C'/G)·H·W``, the
            number of elements one element attends to) to keep its magnitude independent
            of the input size; default ``True``.

    Shapes: ``(B, C, H, W) -> (B, C, H, W)``. The fast path costs ``O(P·C'·H·W)`` time and
    memory; the ``N × N`` affinity is never formed.

    Initialisation: the output GroupNorm's weight (gamma) is zero-initialised, so the block
    starts as the exact identity.
    """

    def __init__(
        self,
        channels: int,
        planes: int | None = None,
        groups: int | None = None,
        kernel: str = "dot",
        order: int = 3,
        gamma: float = 1e-4,
        scale: bool = True,
    ) -> None:
        super().__init__()
        self.channels = check_positive_int("channels", channels)
        self.planes = check_positive_int(
            "planes", max(1, channels // 2) if planes is None else planes
        )
        if groups is None:
            groups = math.gcd(8, self.planes, channels)
        self.groups = check_positive_int("groups", groups)
        if self.planes % groups or channels % groups:
            raise ValueError(
                f"groups must divide both planes ({self.planes}) and channels ({channels}), "
                f"got groups={groups}"
            )
        if kernel not in _KERNELS:
            raise ValueError(f"kernel must be one of {_KERNELS}, got {kernel!r}")
        self.kernel = kernel
        if isinstance(order, bool) or not isinstance(order, int) or order < 0:
            raise ValueError(f"order must be a non-negative int, got {order!r}")
        self.order = order
        if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not gamma > 0:
            raise ValueError(f"gamma must be a positive float, got {gamma!r}")
        if not math.isfinite(gamma):
            raise ValueError(f"gamma must be finite, got {gamma!r}")
        self.gamma = float(gamma)
        self.scale = bool(scale)
        self.theta = nn.Conv2d(channels, self.planes, 1, bias=False)
        self.phi = nn.Conv2d(channels, self.planes, 1, bias=False)
        self.g = nn.Conv2d(channels, self.planes, 1, bias=False)
        self.proj = nn.Conv2d(self.planes, channels, 1, groups=groups, bias=False)
        self.norm = nn.GroupNorm(groups, channels)
        nn.init.zeros_(self.norm.weight)

    def taylor_coefficients(self) -> list[float]:
        """``α_p² = (2γ)^p / p!`` for ``p = 0..P``."""
        return [(2.0 * self.gamma) ** p / math.factorial(p) for p in range(self.order + 1)]

    def aggregate(self, t: Tensor, p: Tensor, g: Tensor) -> Tensor:
        """Compact kernel aggregation over groups: ``(B, G, N)`` ×3 -> ``(B, G, N)``."""
        if self.kernel == "dot":
            y = t * (p * g).sum(-1, keepdim=True)
        else:
            gam = self.gamma
            weighted = torch.exp(-gam * p * p) * g  # exp(-γφ_j²) g_j
            y = torch.zeros_like(t)
            t_pow = torch.ones_like(t)
            p_pow = torch.ones_like(p)
            for k, coef in enumerate(self.taylor_coefficients()):
                if k > 0:
                    t_pow = t_pow * t
                    p_pow = p_pow * p
                y = y + coef * t_pow * (p_pow * weighted).sum(-1, keepdim=True)
            y = torch.exp(-gam * t * t) * y
        if self.scale:
            y = y / math.sqrt(t.shape[-1])
        return y

    def spatial_map(self, x: Tensor) -> Tensor:
        """Attention received per position, ``(B, C, H, W) -> (B, H, W)``: for every element
        ``j`` (a channel at a position) of each group, the sum over all elements ``i`` of
        the kernel ``f(θ_i, φ_j)`` (the compact form: ``φ_j Σ_i θ_i`` for the dot product,
        ``exp(-γφ_j²) Σ_p α_p² φ_j^p Σ_i exp(-γθ_i²) θ_i^p`` for the Taylor-Gaussian),
        summed over the channels at each position. Signed for the dot product (the
        soft-map API clamps negatives); the ``1/sqrt(N)`` scale is left out."""
        check_feature_map(x, self.channels, type(self).__name__)
        b, _, h, w = x.shape
        work = torch.promote_types(self.theta.weight.dtype, torch.float32)
        with torch.autocast(device_type=x.device.type, enabled=False):
            t, p = (z.to(work).reshape(b, self.groups, -1) for z in (self.theta(x), self.phi(x)))
            if self.kernel == "dot":
                got = p * t.sum(-1, keepdim=True)
            else:
                gam = self.gamma
                qt = torch.exp(-gam * t * t)
                got = torch.zeros_like(p)
                for k, coef in enumerate(self.taylor_coefficients()):
                    got = got + coef * p.pow(k) * (qt * t.pow(k)).sum(-1, keepdim=True)
                got = torch.exp(-gam * p * p) * got
        return got.reshape(b, self.planes, h, w).sum(dim=1)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, H, W) -> (B, C, H, W)``."""
        check_feature_map(x, self.channels, type(self).__name__)
        b, _, h, w = x.shape
        t, p, g = self.theta(x), self.phi(x), self.g(x)
        out_dtype = t.dtype
        # Sums run over (C'/G)·H·W elements and powers up to P: keep them out of float16.
        work = torch.promote_types(out_dtype, torch.float32)
        with torch.autocast(device_type=x.device.type, enabled=False):
            y = self.aggregate(*(z.to(work).reshape(b, self.groups, -1) for z in (t, p, g)))
        y = y.to(out_dtype).reshape(b, self.planes, h, w)
        return x + self.norm(self.proj(y))

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, planes={self.planes}, groups={self.groups}, "
            f"kernel={self.kernel!r}, order={self.order}, gamma={self.gamma}, scale={self.scale}"
        )
