"""Non-local block: every position attends to every other position.

Wang, Girshick, Gupta, He (2018), *Non-local Neural Networks* (CVPR 2018). The block is
``z_i = W_z y_i + x_i`` with ``y_i = 1 / C(x) * sum_j f(x_i, x_j) g(x_j)``, ``g`` a 1x1
convolution and ``W_z`` a 1x1 convolution followed by batch norm whose gamma is
zero-initialised, so the block starts as exactly the identity. The paper's four pairwise
functions, each with the paper's normalisation ``C(x)``:

===================== ===================================== =======================
``pairwise``          ``f(x_i, x_j)``                       ``C(x)``
===================== ===================================== =======================
``gaussian``          ``exp(x_i . x_j)``                    ``sum_j f`` (softmax)
``embedded_gaussian`` ``exp(theta(x_i) . phi(x_j))``        ``sum_j f`` (softmax)
``dot_product``       ``theta(x_i) . phi(x_j)``             ``N``
``concatenation``     ``relu(w_f . [theta(x_i), phi(x_j)])`` ``N``
===================== ===================================== =======================

``N`` is the number of positions ``j`` summed over (``H * W``, or the pooled count with
sub-sampling). Sub-sampling (the paper's "max pooling after phi and g") max-pools the
keys and the values 2x2, which cuts the cost of the pairwise step by four.

Fast paths (checked against a naive loop in the tests): the Gaussian forms go through
``scaled_dot_product_attention`` (``scale=1``), never materialising the ``N x N`` matrix
on backends with fused kernels; the dot product is reassociated as
``theta (phi^T g) / N``, which is linear in ``N``; the concatenation form splits ``w_f``
into its ``theta`` and ``phi`` halves so ``w_f . [a, b] = w_a . a + w_b . b`` is a broadcast
sum.

Registered as ``"nonlocal"`` (one name; ``pairwise`` picks the variant), alias ``"nl"``
(timm's name). timm's ``NonLocalAttn`` is the embedded Gaussian form with the logits
scaled by ``C ** -0.5`` (``use_scale=True``, its default); this block, like the paper,
does not scale (timm's ``use_scale=False``).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from soft_baselines._checks import check_feature_map, check_positive_int, check_positive_number
from soft_baselines.registry import register

__all__ = ["PAIRWISE_FUNCTIONS", "NonLocalBlock"]

Pairwise = Literal["embedded_gaussian", "gaussian", "dot_product", "concatenation"]
PAIRWISE_FUNCTIONS: tuple[str, ...] = (
    "embedded_gaussian",
    "gaussian",
    "dot_product",
    "concatenation",
)


def _inter_channels_from_rd_ratio(channels: int, rd_ratio: float) -> dict[str, int]:
    """timm's ``rd_ratio`` as ``inter_channels = max(1, round(channels * rd_ratio))``."""
    check_positive_number("rd_ratio", rd_ratio)
    return {"inter_channels": max(1, round(channels * rd_ratio))}


@register("nonlocal", aliases=("nl",), rd_ratio=_inter_channels_from_rd_ratio, spatial_map=True)
class NonLocalBlock(nn.Module):
    """Non-local block ``x + BN(W_z y)``, exactly the identity at init.

    Shapes: ``(B, C, H, W) -> (B, C, H, W)``; memory of the pairwise step is
    ``O(B * H * W * N)`` except on the fast paths described in the module docstring.

    Args:
        channels: ``C``.
        pairwise: one of ``PAIRWISE_FUNCTIONS`` (default ``"embedded_gaussian"``).
        inter_channels: width ``C'`` of ``theta``, ``phi`` and ``g`` (default
            ``max(1, C // 2)``, the paper's bottleneck). The Gaussian form has no ``theta``
            and ``phi`` and compares raw ``C``-channel features.
        sub_sample: max-pool keys and values 2x2 (only along axes of size >= 2; windows at
            odd edges are kept, ``ceil_mode``).

    Initialisation: PyTorch defaults, except the batch norm after ``W_z``: gamma = 0 and
    beta = 0, so the block outputs its input exactly, in training and eval mode.
    """

    def __init__(
        self,
        channels: int,
        pairwise: Pairwise = "embedded_gaussian",
        inter_channels: int | None = None,
        sub_sample: bool = False,
    ) -> None:
        super().__init__()
        if pairwise not in PAIRWISE_FUNCTIONS:
            raise ValueError(
                f"pairwise must be one of {', '.join(PAIRWISE_FUNCTIONS)}; got {pairwise!r}"
            )
        check_positive_int("channels", channels)
        if inter_channels is None:
            inter_channels = max(1, channels // 2)
        check_positive_int("inter_channels", inter_channels)
        self.channels = channels
        self.inter_channels = inter_channels
        self.pairwise = pairwise
        self.sub_sample = bool(sub_sample)
        ci = inter_channels
        self.g = nn.Conv2d(channels, ci, 1)
        if pairwise == "gaussian":
            self.theta = None
            self.phi = None
        else:
            self.theta = nn.Conv2d(channels, ci, 1)
            self.phi = nn.Conv2d(channels, ci, 1)
        # w_f of the concatenation form: [theta(x_i), phi(x_j)] (2 C') -> scalar.
        self.concat_project = (
            nn.Linear(2 * ci, 1, bias=False) if pairwise == "concatenation" else None
        )
        self.w_z = nn.Conv2d(ci, channels, 1)
        self.bn = nn.BatchNorm2d(channels)
        nn.init.zeros_(self.bn.weight)
        nn.init.zeros_(self.bn.bias)

    def _pool(self, t: Tensor) -> Tensor:
        if not self.sub_sample:
            return t
        kernel = (2 if t.shape[2] >= 2 else 1, 2 if t.shape[3] >= 2 else 1)
        return F.max_pool2d(t, kernel, ceil_mode=True)

    def embed(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Queries ``(B, N_q, D)``, keys ``(B, N_k, D)`` and values ``(B, N_k, C')``.

        ``N_q = H * W`` and ``N_k`` is ``H * W`` or the sub-sampled count; ``D = C`` for the
        Gaussian form (raw features), ``C'`` otherwise. Positions are in row-major order.
        """
        check_feature_map(x, self.channels, type(self).__name__)
        if self.theta is None or self.phi is None:
            q, k = x, self._pool(x)
        else:
            q, k = self.theta(x), self._pool(self.phi(x))
        v = self._pool(self.g(x))
        return (
            q.flatten(2).transpose(1, 2),
            k.flatten(2).transpose(1, 2),
            v.flatten(2).transpose(1, 2),
        )

    def _concat_logits(self, q: Tensor, k: Tensor) -> Tensor:
        # w_f . [q_i, k_j] = w_q . q_i + w_k . k_j  ->  (B, N_q, N_k), before the ReLU.
        if self.concat_project is None:
            raise ValueError(f"no w_f: this block uses pairwise={self.pairwise!r}")
        w_q, w_k = self.concat_project.weight[0].split(self.inter_channels)
        return (q @ w_q.to(q.dtype))[:, :, None] + (k @ w_k.to(k.dtype))[:, None, :]

    def pairwise_weights(self, x: Tensor) -> Tensor:
        """The normalised weights ``f(x_i, x_j) / C(x)``: ``(B, C, H, W) -> (B, H*W, N_k)``.

        Materialises the full matrix (for inspection and plotting); :meth:`forward` does not
        need to.
        """
        q, k, _ = self.embed(x)
        n_k = k.shape[1]
        if self.pairwise in ("gaussian", "embedded_gaussian"):
            return torch.softmax(q @ k.transpose(1, 2), dim=-1)
        if self.pairwise == "dot_product":
            return (q @ k.transpose(1, 2)) / n_k
        return torch.relu(self._concat_logits(q, k)) / n_k

    def spatial_map(self, x: Tensor) -> Tensor:
        """Attention received per key position: the column sums over all queries of
        :meth:`pairwise_weights`, ``(B, C, H, W) -> (B, H_k, W_k)`` (``H_k, W_k`` the
        keys' grid: ``H, W``, or the 2x2-pooled grid with ``sub_sample``). Signed for the
        dot-product form (the soft-map API clamps negatives)."""
        b = x.shape[0]
        grid = self._pool(x[:, :1]).shape[2:]
        weights = self.pairwise_weights(x)
        return weights.to(torch.promote_types(weights.dtype, torch.float32)).sum(1).view(b, *grid)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, H, W) -> (B, C, H, W)``: ``x + BN(W_z y)``."""
        q, k, v = self.embed(x)
        n_k = k.shape[1]
        if self.pairwise in ("gaussian", "embedded_gaussian"):
            # Under autocast q and k of the Gaussian form are raw (float32) features while v
            # comes out of a convolution in half precision; give the kernel one dtype.
            y = F.scaled_dot_product_attention(q.to(v.dtype), k.to(v.dtype), v, scale=1.0)
        elif self.pairwise == "dot_product":
            y = q @ (k.transpose(1, 2) @ v) / n_k
        else:
            y = torch.relu(self._concat_logits(q, k)) @ v / n_k
        b, _, h, w = x.shape
        y = y.transpose(1, 2).reshape(b, self.inter_channels, h, w)
        return x + self.bn(self.w_z(y))

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, pairwise={self.pairwise!r}, "
            f"inter_channels={self.inter_channels}, sub_sample={self.sub_sample}"
        )
