"""Interlaced Sparse Self-Attention (ISA).

Paper: Lang Huang, Yuhui Yuan, Jianyuan Guo, Chao Zhang, Xilin Chen, Jingdong Wang (2019),
"Interlaced Sparse Self-Attention for Semantic Segmentation", arXiv:1907.12273.

The dense ``N × N`` affinity of self-attention is factorised into two sparse ones. With a
block size ``(P_h, P_w)`` and ``Q_h = H / P_h``, ``Q_w = W / P_w``:

- long-range stage: positions whose coordinates agree modulo ``(P_h, P_w)`` form one of the
  ``P_h·P_w`` groups (``Q_h·Q_w`` positions each, spaced ``P_h`` rows and ``P_w`` columns
  apart); self-attention runs inside each group;
- short-range stage: each contiguous ``P_h × P_w`` block forms one of the ``Q_h·Q_w``
  groups; self-attention runs inside each group;

and the result is permuted back to ``(B, C, H, W)``. Each stage is a standard
embedded-Gaussian self-attention with its own weights. When ``H`` or ``W`` is not a
multiple of the block size the input is zero-padded at the bottom/right, padded positions
are masked out as keys (so they never influence real positions), and the output is
cropped back.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from soft_baselines._checks import check_feature_map, check_positive_int
from soft_baselines.registry import register

__all__ = [
    "EmbeddedGaussianAttention",
    "InterlacedSparseSelfAttention",
    "long_range_group",
    "long_range_ungroup",
    "short_range_group",
    "short_range_ungroup",
]


def _check_divisible(x: Tensor, ph: int, pw: int) -> tuple[int, int, int, int]:
    b, c, h, w = x.shape
    if h % ph or w % pw:
        raise ValueError(f"spatial size {(h, w)} must be divisible by the block size {(ph, pw)}")
    return b, c, h // ph, w // pw


def long_range_group(x: Tensor, ph: int, pw: int) -> Tensor:
    """``(B, C, Q_h·P_h, Q_w·P_w) -> (B·P_h·P_w, C, Q_h, Q_w)``.

    Group ``(p_h, p_w)`` holds the positions ``(q_h·P_h + p_h, q_w·P_w + p_w)``.
    """
    b, c, qh, qw = _check_divisible(x, ph, pw)
    x = x.reshape(b, c, qh, ph, qw, pw).permute(0, 3, 5, 1, 2, 4)
    return x.reshape(b * ph * pw, c, qh, qw)


def long_range_ungroup(y: Tensor, ph: int, pw: int) -> Tensor:
    """Inverse of :func:`long_range_group`: ``(B·P_h·P_w, C, Q_h, Q_w) -> (B, C, H, W)``."""
    g, c, qh, qw = y.shape
    if g % (ph * pw):
        raise ValueError(f"leading size {g} must be a multiple of P_h·P_w = {ph * pw}")
    y = y.reshape(g // (ph * pw), ph, pw, c, qh, qw).permute(0, 3, 4, 1, 5, 2)
    return y.reshape(g // (ph * pw), c, qh * ph, qw * pw)


def short_range_group(x: Tensor, ph: int, pw: int) -> Tensor:
    """``(B, C, Q_h·P_h, Q_w·P_w) -> (B·Q_h·Q_w, C, P_h, P_w)``: contiguous blocks."""
    b, c, qh, qw = _check_divisible(x, ph, pw)
    x = x.reshape(b, c, qh, ph, qw, pw).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b * qh * qw, c, ph, pw)


def short_range_ungroup(y: Tensor, qh: int, qw: int) -> Tensor:
    """Inverse of :func:`short_range_group`: ``(B·Q_h·Q_w, C, P_h, P_w) -> (B, C, H, W)``."""
    g, c, ph, pw = y.shape
    if g % (qh * qw):
        raise ValueError(f"leading size {g} must be a multiple of Q_h·Q_w = {qh * qw}")
    y = y.reshape(g // (qh * qw), qh, qw, c, ph, pw).permute(0, 3, 1, 4, 2, 5)
    return y.reshape(g // (qh * qw), c, qh * ph, qw * pw)


class EmbeddedGaussianAttention(nn.Module):
    """Embedded-Gaussian self-attention over all positions of each input map (no residual).

    ``y = W_o( V · softmax(Qᵀ K / sqrt(d_k))ᵀ )`` with 1×1-conv embeddings ``Q, K`` (``d_k``
    channels), ``V`` (``d_v`` channels) and output projection ``W_o`` (``d_v → C``).
    Shapes: ``(G, C, h, w)`` and optional key mask ``(G, h·w)`` (``True`` = real position)
    ``-> (G, C, h, w)``.
    """

    def __init__(self, channels: int, key_channels: int, value_channels: int) -> None:
        super().__init__()
        self.query = nn.Conv2d(channels, key_channels, 1)
        self.key = nn.Conv2d(channels, key_channels, 1)
        self.value = nn.Conv2d(channels, value_channels, 1)
        self.out = nn.Conv2d(value_channels, channels, 1)
        self.scale = key_channels**-0.5

    def weights(self, x: Tensor, key_mask: Tensor | None = None) -> Tensor:
        """The attention ``softmax(Qᵀ K / sqrt(d_k))``: ``(G, C, h, w) -> (G, L, L)``
        (row ``i``: the weights query ``i`` gives), in at least float32."""
        q = self.query(x).flatten(2)  # (G, dk, L)
        k = self.key(x).flatten(2)
        energy = torch.bmm(q.transpose(1, 2), k)  # (G, L, L)
        work = torch.promote_types(energy.dtype, torch.float32)
        energy = energy.to(work) * self.scale
        if key_mask is not None:
            # finfo.min (not -inf): a group made only of padding gets uniform, finite
            # weights; any real key drives the padded keys' weights to exactly 0.
            energy = energy.masked_fill(~key_mask[:, None, :], torch.finfo(work).min)
        return torch.softmax(energy, dim=-1)

    def forward(self, x: Tensor, key_mask: Tensor | None = None) -> Tensor:
        g, _, h, w = x.shape
        v = self.value(x).flatten(2)  # (G, dv, L)
        att = self.weights(x, key_mask).to(v.dtype)
        y = torch.bmm(v, att.transpose(1, 2))  # (G, dv, L)
        return self.out(y.reshape(g, -1, h, w))


@register("isa", kind="block", spatial_map=True)
class InterlacedSparseSelfAttention(nn.Module):
    """Interlaced sparse self-attention (long-range then short-range groups), residual.

    Args:
        channels: input/output channels ``C``.
        block_size: ``P`` or ``(P_h, P_w)``; default 8.
        key_channels: query/key channels of each stage; default ``max(1, C // 2)``.
        value_channels: value channels of each stage; default ``max(1, C // 2)``.

    Shapes: ``(B, C, H, W) -> (B, C, H, W)``, any ``H, W`` (padded to multiples of the
    block size internally, with padded positions masked out, then cropped). On maps no
    larger than one block each long-range group holds a single position (its attention is
    trivially 1, so that stage's query/key get no gradient) and the block reduces to one
    dense self-attention over the map: choose ``block_size`` about ``sqrt(H), sqrt(W)``.

    Initialisation: ``forward(x) = x + BN(interlaced(x))`` with the BatchNorm's gamma
    zero-initialised, so the block starts as the exact identity.
    """

    def __init__(
        self,
        channels: int,
        block_size: int | tuple[int, int] = 8,
        key_channels: int | None = None,
        value_channels: int | None = None,
    ) -> None:
        super().__init__()
        self.channels = check_positive_int("channels", channels)
        if isinstance(block_size, (tuple, list)):
            if len(block_size) != 2:
                raise ValueError(f"block_size must be an int or a pair, got {block_size!r}")
            ph, pw = block_size
        else:
            ph = pw = block_size
        self.block_size = (
            check_positive_int("block_size", ph),
            check_positive_int("block_size", pw),
        )
        dk = max(1, channels // 2) if key_channels is None else key_channels
        dv = max(1, channels // 2) if value_channels is None else value_channels
        self.key_channels = check_positive_int("key_channels", dk)
        self.value_channels = check_positive_int("value_channels", dv)
        self.long_attn = EmbeddedGaussianAttention(channels, dk, dv)
        self.short_attn = EmbeddedGaussianAttention(channels, dk, dv)
        self.norm = nn.BatchNorm2d(channels)
        nn.init.zeros_(self.norm.weight)

    def _padded(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
        """``x`` padded to whole blocks, the real-position map ``(B, 1, H_p, W_p)`` and the
        key masks of the two stages (``None`` without padding)."""
        b, _, h, w = x.shape
        ph, pw = self.block_size
        pad_h, pad_w = (-h) % ph, (-w) % pw
        real = torch.ones(b, 1, h, w, dtype=torch.bool, device=x.device)
        mask_long = mask_short = None
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
            real = F.pad(real, (0, pad_w, 0, pad_h), value=False)
            mask_long = long_range_group(real, ph, pw).flatten(1)
            mask_short = short_range_group(real, ph, pw).flatten(1)
        return x, real, mask_long, mask_short

    def spatial_map(self, x: Tensor) -> Tensor:
        """Attention received per position through both stages, ``(B, C, H, W) -> (B, H,
        W)``. The two sparse affinities compose into the dense one ``A_short A_long``
        (both stages mix positions linearly); its column sums over the real queries are
        ``(1ᵀ A_short) A_long``: the mass each position receives in the short-range stage,
        passed back through the long-range stage's affinity. Padded positions receive
        nothing."""
        check_feature_map(x, self.channels, type(self).__name__)
        h, w = x.shape[2:]
        ph, pw = self.block_size
        x, real, mask_long, mask_short = self._padded(x)
        qh, qw = x.shape[2] // ph, x.shape[3] // pw
        grouped = long_range_group(x, ph, pw)
        a_long = self.long_attn.weights(grouped, mask_long)  # (G1, L1, L1)
        y = long_range_ungroup(self.long_attn(grouped, mask_long), ph, pw)
        a_short = self.short_attn.weights(short_range_group(y, ph, pw), mask_short)
        mass = short_range_group(real.to(a_short.dtype), ph, pw).flatten(1)  # real queries
        got = (mass[:, :, None] * a_short).sum(dim=1)  # (G2, L2)
        got = short_range_ungroup(got.view(-1, 1, ph, pw), qh, qw)  # (B, 1, H_p, W_p)
        got = (long_range_group(got, ph, pw).flatten(1)[:, :, None] * a_long).sum(dim=1)
        got = long_range_ungroup(got.view(-1, 1, qh, qw), ph, pw)
        return got[:, 0, :h, :w]

    def interlaced(self, x: Tensor) -> Tensor:
        """Pad, long-range attention, short-range attention, permute back, crop.

        ``(B, C, H, W) -> (B, C, H, W)``; no residual, no normalisation.
        """
        h, w = x.shape[2:]
        ph, pw = self.block_size
        x, _, mask_long, mask_short = self._padded(x)
        qh, qw = x.shape[2] // ph, x.shape[3] // pw
        y = long_range_ungroup(self.long_attn(long_range_group(x, ph, pw), mask_long), ph, pw)
        y = short_range_ungroup(self.short_attn(short_range_group(y, ph, pw), mask_short), qh, qw)
        return y[:, :, :h, :w]

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, H, W) -> (B, C, H, W)``."""
        check_feature_map(x, self.channels, type(self).__name__)
        return x + self.norm(self.interlaced(x))

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, block_size={self.block_size}, "
            f"key_channels={self.key_channels}, value_channels={self.value_channels}"
        )
