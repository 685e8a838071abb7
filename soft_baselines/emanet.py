"""Expectation-Maximization Attention Unit (EMAU).

Paper: Xia Li, Zhisheng Zhong, Jianlong Wu, Yibo Yang, Zhouchen Lin, Hong Liu (2019),
"Expectation-Maximization Attention Networks for Semantic Segmentation", ICCV 2019.

Instead of attending over all ``N = H·W`` positions, the unit fits ``K ≪ N`` bases
``μ ∈ R^{K×C}`` to the features ``X ∈ R^{N×C}`` with a few EM iterations and reconstructs
the features from them (a low-rank attention):

- E step: responsibilities ``Z = softmax_K(λ · X μᵀ)`` (kernel ``exp(λ aᵀb)``);
- M step: ``μ_k = Σ_n Z_nk x_n / Σ_n Z_nk``, then ``μ_k ← μ_k / ‖μ_k‖₂``;
- after ``T`` iterations: reconstruction ``X̃ = Z μ``.

The initial bases ``μ⁽⁰⁾`` are drawn from a normal distribution, L2-normalised, and kept
in a buffer maintained by a moving average of the batch's final bases during training:
``μ⁽⁰⁾ ← α μ⁽⁰⁾ + (1 − α) mean_batch(μ⁽ᵀ⁾)`` (then re-normalised), ``α = 0.9``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from soft_baselines._checks import check_feature_map, check_positive_int
from soft_baselines.registry import register

__all__ = ["EMAttentionUnit"]


@register("ema", kind="block", spatial_map=True)
class EMAttentionUnit(nn.Module):
    """EM attention unit: ``K`` bases fitted by ``T`` EM iterations, residual.

    Args:
        channels: input/output channels ``C`` (the bases live in ``C`` dimensions).
        num_bases: number of bases ``K``; default 64 (paper).
        iters: EM iterations ``T`` in training; default 3 (paper).
        eval_iters: EM iterations in eval mode; default ``iters`` (the paper reports that
            ``T`` may be raised at inference).
        lam: inverse temperature ``λ`` of the responsibilities ``softmax(λ X μᵀ)``; the paper
            leaves it as a smoothness hyperparameter of the ``exp(λ aᵀb)`` kernel, the plain
            inner-product kernel (``λ = 1``) is the default.
        momentum: moving-average coefficient ``α`` of the basis buffer; default 0.9 (paper).

    Data flow: ``conv1x1 → EM(T) → reconstruction → ReLU → conv1x1 → BN``, added to ``x``.
    The EM iterations are differentiable (gradients reach ``conv_in`` through them); the
    basis buffer ``bases`` (``(K, C)``, unit rows) is updated only in training mode, under
    ``torch.no_grad`` and from detached tensors, and never in eval mode.

    Shapes: ``(B, C, H, W) -> (B, C, H, W)``.

    Initialisation: the final BatchNorm's gamma is zero-initialised, so the block starts as
    the exact identity.
    """

    bases: Tensor

    def __init__(
        self,
        channels: int,
        num_bases: int = 64,
        iters: int = 3,
        eval_iters: int | None = None,
        lam: float = 1.0,
        momentum: float = 0.9,
    ) -> None:
        super().__init__()
        self.channels = check_positive_int("channels", channels)
        self.num_bases = check_positive_int("num_bases", num_bases)
        self.iters = check_positive_int("iters", iters)
        self.eval_iters = check_positive_int(
            "eval_iters", iters if eval_iters is None else eval_iters
        )
        if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not lam > 0:
            raise ValueError(f"lam must be a positive float, got {lam!r}")
        if not math.isfinite(lam):
            raise ValueError(f"lam must be finite, got {lam!r}")
        self.lam = float(lam)
        if (
            isinstance(momentum, bool)
            or not isinstance(momentum, (int, float))
            or not 0.0 <= momentum <= 1.0
        ):
            raise ValueError(f"momentum must be a float in [0, 1], got {momentum!r}")
        self.momentum = float(momentum)
        bases = torch.randn(num_bases, channels) * math.sqrt(2.0 / num_bases)
        self.register_buffer("bases", F.normalize(bases, dim=1))
        self.conv_in = nn.Conv2d(channels, channels, 1)
        self.conv_out = nn.Conv2d(channels, channels, 1, bias=False)
        self.norm = nn.BatchNorm2d(channels)
        nn.init.zeros_(self.norm.weight)

    def em(self, feats: Tensor, iters: int) -> tuple[Tensor, Tensor]:
        """Run ``iters`` EM iterations from the basis buffer.

        Args:
            feats: ``(B, C, N)`` features.

        Returns:
            ``(z, mu)``: responsibilities ``(B, N, K)`` (rows sum to 1) and bases
            ``(B, C, K)`` (unit columns).
        """
        b = feats.shape[0]
        # A copy: the buffer is updated in place after the forward pass, and autograd must
        # not see that update.
        mu0 = self.bases.detach().to(feats.dtype, copy=True)
        mu = mu0.t().unsqueeze(0).expand(b, -1, -1)  # (B, C, K)
        z = feats.new_empty(0)
        for _ in range(iters):
            z = torch.softmax(self.lam * torch.bmm(feats.transpose(1, 2), mu), dim=2)  # E
            z_norm = z / (1e-6 + z.sum(dim=1, keepdim=True))
            mu = F.normalize(torch.bmm(feats, z_norm), dim=1)  # M
        return z, mu

    @torch.no_grad()
    def update_bases(self, mu: Tensor) -> None:
        """Moving-average update of the buffer from a batch's final bases ``(B, C, K)``."""
        mean = mu.detach().mean(dim=0).t().to(self.bases.dtype)  # (K, C)
        new = self.momentum * self.bases + (1.0 - self.momentum) * mean
        self.bases.copy_(F.normalize(new, dim=1))

    def spatial_map(self, x: Tensor) -> Tensor:
        """Attention received per position, ``(B, C, H, W) -> (B, H, W)``: the column sums
        of the affinity the reconstruction applies. With the last E step's ``Z`` and
        ``m_k = Σ_n Z_nk x_n / Σ_n Z_nk`` (before the L2 normalisation), ``x̃ = X Aᵀ`` with
        ``A_{n'n} = Σ_k Z_{n'k} Z_nk / (Σ_m Z_mk ‖m_k‖)``; position ``n`` receives
        ``Σ_{n'} A_{n'n} = Σ_k Z_nk / ‖m_k‖``. Without the normalisation every position
        would receive exactly 1, so the map shows which bases (and their positions) the
        normalisation amplifies: the low-rank attention has no other preferred place.
        Uses the basis buffer as it stands (the forward updates it afterwards)."""
        check_feature_map(x, self.channels, type(self).__name__)
        b, c, h, w = x.shape
        feats = self.conv_in(x)
        work = torch.promote_types(feats.dtype, torch.float32)
        iters = self.iters if self.training else self.eval_iters
        with torch.autocast(device_type=x.device.type, enabled=False):
            f = feats.reshape(b, c, h * w).to(work)
            z, _ = self.em(f, iters)  # (B, N, K)
            usage = z.sum(dim=1, keepdim=True)  # (B, 1, K)
            z_norm = z / (1e-6 + usage)
            norms = torch.bmm(f, z_norm).norm(dim=1, keepdim=True).clamp_min(1e-12)  # (B, 1, K)
            got = (z_norm * usage / norms).sum(dim=2)  # (B, N)
        return got.view(b, h, w)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, H, W) -> (B, C, H, W)``; in training mode also updates ``bases``."""
        check_feature_map(x, self.channels, type(self).__name__)
        b, c, h, w = x.shape
        feats = self.conv_in(x)
        out_dtype = feats.dtype
        work = torch.promote_types(out_dtype, torch.float32)
        iters = self.iters if self.training else self.eval_iters
        with torch.autocast(device_type=x.device.type, enabled=False):
            z, mu = self.em(feats.reshape(b, c, h * w).to(work), iters)
            recon = torch.bmm(mu, z.transpose(1, 2))  # (B, C, N)
        if self.training and b > 0:
            self.update_bases(mu)
        y = F.relu(recon.to(out_dtype).reshape(b, c, h, w))
        return x + self.norm(self.conv_out(y))

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, num_bases={self.num_bases}, iters={self.iters}, "
            f"eval_iters={self.eval_iters}, lam={self.lam}, momentum={self.momentum}"
        )
