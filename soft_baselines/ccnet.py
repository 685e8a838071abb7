"""Criss-Cross attention (recurrent), from CCNet.

Paper: Zilong Huang, Xinggang Wang, Lichao Huang, Chang Huang, Yunchao Wei, Wenyu Liu
(2019), "CCNet: Criss-Cross Attention for Semantic Segmentation", ICCV 2019.

Each position ``u`` attends only to the positions in its own row and column: ``H + W − 1``
positions, ``u`` itself counted once. With query/key maps ``Q, K`` (``C/8`` channels) and
values ``V`` (``C`` channels), the energies of ``u = (h, w)`` are ``Q_u · K_{(h', w)}`` over
its column and ``Q_u · K_{(h, w')}`` over its row; as in the paper the column part gets
``−∞`` at ``h' = h`` so the self position is counted once (by the row part). A softmax over
the concatenated ``H + W`` energies weighs the values, and ``H'_u = γ·Σ A V + H_u`` with a
learnable ``γ`` initialised to 0. Recurrent criss-cross attention applies the same module
``R`` times (shared weights; ``R = 2`` lets information reach every position).

The fast path uses einsums over rows and columns: ``O(H·W·(H + W)·C)``; no ``N × N``
matrix (``N = H·W``) is formed.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from soft_baselines._checks import check_feature_map, check_positive_int
from soft_baselines.registry import register

__all__ = ["CrissCrossAttention"]


@register("cc", kind="block", spatial_map=True)
class CrissCrossAttention(nn.Module):
    """Recurrent criss-cross attention (``R`` passes of one shared module), residual.

    Args:
        channels: input/output channels ``C``.
        reduction: query/key channels are ``max(1, C // reduction)``; default 8 (paper).
        recurrence: number ``R`` of passes with shared weights; default 2 (paper).

    Shapes: ``(B, C, H, W) -> (B, C, H, W)``.

    Initialisation: the learnable scale ``γ`` (``gamma``) is zero-initialised, so every pass
    and hence the block starts as the exact identity.
    """

    def __init__(self, channels: int, reduction: int = 8, recurrence: int = 2) -> None:
        super().__init__()
        self.channels = check_positive_int("channels", channels)
        self.reduction = check_positive_int("reduction", reduction)
        self.recurrence = check_positive_int("recurrence", recurrence)
        qk = max(1, channels // reduction)
        self.query = nn.Conv2d(channels, qk, 1)
        self.key = nn.Conv2d(channels, qk, 1)
        self.value = nn.Conv2d(channels, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def attention(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Criss-cross attention weights of ``x``.

        Returns ``(a_col, a_row)`` of shapes ``(B, H, W, H)`` and ``(B, H, W, W)``: the
        weight position ``(h, w)`` gives to ``(h', w)`` and to ``(h, w')``. ``a_col`` is zero
        at ``h' = h``; together each position's weights sum to 1 over ``H + W − 1`` places.
        """
        q, k = self.query(x), self.key(x)
        h, w = x.shape[-2:]
        e_col = torch.einsum("bchw,bcgw->bhwg", q, k)  # (B, H, W, H')
        e_row = torch.einsum("bchw,bchv->bhwv", q, k)  # (B, H, W, W')
        work = torch.promote_types(e_col.dtype, torch.float32)
        self_pos = torch.eye(h, dtype=torch.bool, device=x.device).view(1, h, 1, h)
        e_col = e_col.to(work).masked_fill(self_pos, float("-inf"))
        att = torch.softmax(torch.cat([e_col, e_row.to(work)], dim=-1), dim=-1)
        a_col, a_row = att.split([h, w], dim=-1)
        return a_col, a_row

    def step(self, x: Tensor) -> Tensor:
        """One criss-cross pass: ``(B, C, H, W) -> (B, C, H, W)``."""
        a_col, a_row = self.attention(x)
        v = self.value(x)
        a_col, a_row = a_col.to(v.dtype), a_row.to(v.dtype)
        out = torch.einsum("bhwg,bcgw->bchw", a_col, v) + torch.einsum("bhwv,bchv->bchw", a_row, v)
        return x + self.gamma.to(out.dtype) * out

    def spatial_map(self, x: Tensor) -> Tensor:
        """Attention received per position, ``(B, C, H, W) -> (B, H, W)``: in each pass
        the sum, over every query, of the weights it gives along its row and column
        (``a_col`` summed over the query rows, ``a_row`` over the query columns); the mean
        over the ``R`` passes, each computed on that pass's input as in the forward."""
        check_feature_map(x, self.channels, type(self).__name__)
        total = x.new_zeros(0)
        for r in range(self.recurrence):
            a_col, a_row = self.attention(x)
            got = a_col.sum(dim=1).transpose(1, 2) + a_row.sum(dim=2)  # (B, H, W)
            total = got if r == 0 else total + got
            if r + 1 < self.recurrence:
                x = self.step(x)
        return total / self.recurrence

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, H, W) -> (B, C, H, W)``."""
        check_feature_map(x, self.channels, type(self).__name__)
        for _ in range(self.recurrence):
            x = self.step(x)
        return x

    def extra_repr(self) -> str:
        return f"channels={self.channels}, reduction={self.reduction}, recurrence={self.recurrence}"
