"""LatentGNN: message passing through a few latent nodes, a low-rank non-local operator.

Zhang, He, Yan (2019), *LatentGNN: Learning Efficient Non-local Relations for Visual
Recognition* (ICML 2019; arXiv:1905.11634). The dense graph over all ``N = H * W``
positions is replaced by a bipartite graph to ``D`` latent nodes (``D << N``):

- **Visible to latent**: ``psi(x_i) = relu(W_v x_i)`` in ``R^D`` (non-negative kernel),
  normalised over positions, ``z_k = sum_i psi_k(x_i) / sum_j psi_k(x_j) * x_i``.
- **Latent to latent**: ``z' = softmax(Z Z^T / sqrt(C)) Z`` (a dense graph over the
  ``D`` latent nodes, dot-product kernel).
- **Latent to visible**: ``phi(x_i) = relu(W_u x_i)``, normalised over the latent nodes,
  ``x~_i = sum_k phi_k(x_i) / sum_l phi_l(x_i) * z'_k``.

The result is ``x + BN(W_o x~)``. Together the three steps are the ``N x N`` operator
``Phi A Psi^T`` of rank at most ``D``, applied without forming it: cost ``O(N D C)``.

Registered as ``"latentgnn"``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from soft_baselines._checks import check_feature_map, check_positive_int
from soft_baselines.registry import register

__all__ = ["LatentGNN"]

_EPS = 1e-6


@register("latentgnn", spatial_map=True)
class LatentGNN(nn.Module):
    """LatentGNN block ``x + BN(W_o Phi A Psi^T x)``, exactly the identity at init.

    Shapes: ``(B, C, H, W) -> (B, C, H, W)``; cost linear in ``H * W``.

    Args:
        channels: ``C``.
        latent_nodes: ``D`` (paper: 100 for detection, fewer for small maps; default 16).

    A small ``1e-6`` keeps the normalisations finite when a kernel row is all zero (a ReLU
    kernel can switch off everywhere).

    Initialisation: PyTorch defaults except the output batch norm (gamma = beta = 0).
    """

    def __init__(self, channels: int, latent_nodes: int = 16) -> None:
        super().__init__()
        self.channels = check_positive_int("channels", channels)
        self.latent_nodes = check_positive_int("latent_nodes", latent_nodes)
        self.to_latent = nn.Conv2d(channels, latent_nodes, 1)  # W_v
        self.to_visible = nn.Conv2d(channels, latent_nodes, 1)  # W_u
        self.out = nn.Conv2d(channels, channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(channels)
        nn.init.zeros_(self.bn.weight)
        nn.init.zeros_(self.bn.bias)

    def kernels(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Normalised ``Psi`` ``(B, N, D)`` (columns sum to 1 over positions) and ``Phi``
        ``(B, N, D)`` (rows sum to 1 over latent nodes)."""
        check_feature_map(x, self.channels, type(self).__name__)
        psi = torch.relu(self.to_latent(x)).flatten(2).transpose(1, 2)
        phi = torch.relu(self.to_visible(x)).flatten(2).transpose(1, 2)
        psi = psi / (psi.sum(dim=1, keepdim=True) + _EPS)
        phi = phi / (phi.sum(dim=2, keepdim=True) + _EPS)
        return psi, phi

    def spatial_map(self, x: Tensor) -> Tensor:
        """Attention received per position: the column sums of the ``N x N`` operator
        ``Phi A Psi^T`` over all queries, ``((1^T Phi) A) Psi^T`` (never forming it),
        ``(B, C, H, W) -> (B, H, W)``, summing to about ``N``."""
        psi, phi = self.kernels(x)
        feats = x.flatten(2).transpose(1, 2)
        z = psi.transpose(1, 2) @ feats.to(psi.dtype)
        a = torch.softmax(z @ z.transpose(1, 2) / math.sqrt(self.channels), dim=-1)
        got = (phi.sum(dim=1, keepdim=True) @ a) @ psi.transpose(1, 2)  # (B, 1, N)
        b, _, h, w = x.shape
        return got.view(b, h, w)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, H, W) -> (B, C, H, W)``."""
        psi, phi = self.kernels(x)
        feats = x.flatten(2).transpose(1, 2)  # (B, N, C)
        z = psi.transpose(1, 2) @ feats  # (B, D, C): visible -> latent
        a = torch.softmax(z @ z.transpose(1, 2) / math.sqrt(self.channels), dim=-1)
        y = phi @ (a @ z)  # (B, N, C): latent -> latent -> visible
        b, c, h, w = x.shape
        return x + self.bn(self.out(y.transpose(1, 2).reshape(b, c, h, w)))

    def extra_repr(self) -> str:
        return f"channels={self.channels}, latent_nodes={self.latent_nodes}"
