"""Global context block: one query-independent attention map, an SE-style transform.

Cao, Xu, Lin, Wei, Hu (2019), *GCNet: Non-local Networks Meet Squeeze-Excitation Networks
and Beyond* (ICCV Workshops 2019). The block is ``z_i = F(x_i, delta(context))``:

- **Context modelling**: ``alpha = softmax_j(W_k x_j)`` over all ``H * W`` positions
  (``W_k`` a 1x1 convolution to one channel), ``context = sum_j alpha_j x_j`` in ``R^C``
  (``pooling="att"``); ``pooling="avg"`` is the paper's global-average-pooling ablation.
- **Transform** ``delta``: ``conv1x1 (C -> C*ratio) -> LayerNorm -> ReLU -> conv1x1 (-> C)``.
- **Fusion**: ``"add"`` broadcasts ``delta(context)`` onto every position (the paper's
  default); ``"mul"`` gates channels with ``sigmoid(delta(context))`` (the SE-like variant).

Registered as ``"gc"``.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from soft_baselines._checks import check_feature_map, check_positive_int
from soft_baselines.registry import register

__all__ = ["GlobalContextBlock"]


@register("gc", rd_ratio=lambda channels, rd_ratio: {"ratio": rd_ratio}, spatial_map=True)
class GlobalContextBlock(nn.Module):
    """Global context block (GCNet): attention-pooled context, bottleneck transform, fusion.

    Shapes: ``(B, C, H, W) -> (B, C, H, W)``.

    Args:
        channels: ``C``.
        ratio: bottleneck ratio of the transform (paper: 1/16). Hidden width
            ``max(round(C * ratio), min(min_hidden, C), 2)``.
        min_hidden: floor on the hidden width (default 8), as in ``soft_baselines.se``. Never
            below 2 whatever ``C``: LayerNorm over a single unit outputs a constant, which
            would cut the context off from the output (and its gradient).
        pooling: ``"att"`` (softmax attention pooling, the paper's block) or ``"avg"``.
        fusion: ``"add"`` (paper default) or ``"mul"``.

    Initialisation: PyTorch defaults except the last 1x1 convolution of the transform, whose
    weight and bias are zero, so ``delta(context) = 0`` at init. With ``fusion="add"`` the
    block is then exactly the identity; with ``fusion="mul"`` it is exactly ``0.5 * x``
    (``sigmoid(0)``), like an SE gate at init.
    """

    def __init__(
        self,
        channels: int,
        ratio: float = 1 / 16,
        pooling: Literal["att", "avg"] = "att",
        fusion: Literal["add", "mul"] = "add",
        min_hidden: int = 8,
    ) -> None:
        super().__init__()
        check_positive_int("channels", channels)
        if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not ratio > 0:
            raise ValueError(f"ratio must be a positive number, got {ratio!r}")
        if pooling not in ("att", "avg"):
            raise ValueError(f"pooling must be 'att' or 'avg', got {pooling!r}")
        if fusion not in ("add", "mul"):
            raise ValueError(f"fusion must be 'add' or 'mul', got {fusion!r}")
        check_positive_int("min_hidden", min_hidden)
        hidden = max(round(channels * ratio), min(min_hidden, channels), 2)
        self.channels = channels
        self.hidden = hidden
        self.pooling = pooling
        self.fusion = fusion
        self.context_conv = nn.Conv2d(channels, 1, 1) if pooling == "att" else None
        self.transform = nn.Sequential(
            nn.Conv2d(channels, hidden, 1),
            nn.LayerNorm([hidden, 1, 1]),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1),
        )
        last = self.transform[-1]
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def attention_map(self, x: Tensor) -> Tensor:
        """Context weights ``alpha``: ``(B, C, H, W) -> (B, 1, H, W)``, summing to 1 per image."""
        check_feature_map(x, self.channels, type(self).__name__)
        b, _, h, w = x.shape
        if self.context_conv is None:
            return x.new_full((b, 1, h, w), 1.0 / (h * w))
        logits = self.context_conv(x).flatten(2)  # (B, 1, HW)
        return torch.softmax(logits, dim=-1).view(b, 1, h, w)

    def spatial_map(self, x: Tensor) -> Tensor | None:
        """The context weights ``alpha`` (:meth:`attention_map`): ``(B, C, H, W) -> (B, H,
        W)``, summing to 1. Every query shares them (GCNet's query-independent simplification
        of the non-local block), so they are also the attention each position receives.
        ``None`` with ``pooling="avg"``: uniform pooling attends nowhere in particular."""
        if self.context_conv is None:
            return None
        return self.attention_map(x)[:, 0]

    def context(self, x: Tensor) -> Tensor:
        """Global context ``sum_j alpha_j x_j``: ``(B, C, H, W) -> (B, C, 1, 1)``."""
        alpha = self.attention_map(x).flatten(2)  # (B, 1, HW)
        ctx = x.flatten(2) @ alpha.transpose(1, 2).to(x.dtype)  # (B, C, 1)
        return ctx.unsqueeze(-1)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, H, W) -> (B, C, H, W)``."""
        delta = self.transform(self.context(x))
        if self.fusion == "add":
            return x + delta
        return x * torch.sigmoid(delta).to(x.dtype)

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, hidden={self.hidden}, "
            f"pooling={self.pooling!r}, fusion={self.fusion!r}"
        )
