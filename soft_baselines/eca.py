"""Efficient channel attention: SE's gate without the bottleneck, a 1-D convolution instead.

Wang, Wu, Zhu, Li, Zuo, Hu (2020), *ECA-Net: Efficient Channel Attention for Deep
Convolutional Neural Networks* (CVPR 2020; arXiv:1910.03151). SE's bottleneck MLP is
replaced by local cross-channel interaction: ``z = GAP(x)`` in ``R^C``, ``s = sigmoid(
conv1d_k(z))`` (one 1-D convolution over the channel axis, no bias, zero padding,
``k`` weights in all), ``y = s * x``. The kernel size adapts to the width:
``k = psi(C) = |log2(C) / gamma + b / gamma|_odd`` with ``gamma = 2``, ``b = 1``, where
``|t|_odd`` is taken as the authors do: ``int(t)``, plus one if even.

timm's ``EcaModule`` computes the same ``k`` but never below 3; this block allows
``k = 1`` (``C < 8``), where each channel's gate depends on its own mean only.

Registered as ``"eca"`` (timm's name too).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from soft_baselines._checks import (
    check_feature_map,
    check_odd_kernel,
    check_positive_int,
    check_positive_number,
)
from soft_baselines._ops import spatial_mean
from soft_baselines.registry import register

__all__ = ["EfficientChannelAttention", "eca_kernel_size"]


def eca_kernel_size(channels: int, gamma: float = 2.0, b: float = 1.0) -> int:
    """The paper's adaptive kernel size ``|log2(C) / gamma + b / gamma|_odd`` (odd, >= 1)."""
    check_positive_int("channels", channels)
    check_positive_number("gamma", gamma)
    t = int(abs((math.log2(channels) + b) / gamma))
    return t if t % 2 else t + 1


@register("eca", spatial_map=False)
class EfficientChannelAttention(nn.Module):
    """ECA: per-channel sigmoid gates from a 1-D convolution across pooled channels.

    Shapes: ``(B, C, H, W) -> (B, C, H, W)``.

    Args:
        channels: ``C``.
        kernel_size: odd size ``k`` of the channel convolution; ``None`` (default) picks
            :func:`eca_kernel_size` from ``C``, ``gamma`` and ``b``.
        gamma, b: the constants of the adaptive kernel size (paper: 2 and 1).

    Initialisation: PyTorch's default for the 1-D convolution. Like SE the block is a
    multiplicative gate, so at init it scales its input by roughly ``0.5``, not the
    identity.
    """

    def __init__(
        self,
        channels: int,
        kernel_size: int | None = None,
        gamma: float = 2.0,
        b: float = 1.0,
    ) -> None:
        super().__init__()
        check_positive_int("channels", channels)
        if kernel_size is None:
            kernel_size = eca_kernel_size(channels, gamma, b)
        check_odd_kernel("kernel_size", kernel_size)
        self.channels = channels
        self.kernel_size = kernel_size
        self.conv = nn.Conv1d(1, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def gates(self, x: Tensor) -> Tensor:
        """Channel gates in ``(0, 1)``: ``(B, C, H, W) -> (B, C)``."""
        check_feature_map(x, self.channels, type(self).__name__)
        z = spatial_mean(x)  # (B, C)
        return torch.sigmoid(self.conv(z[:, None, :])[:, 0, :])

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, H, W) -> (B, C, H, W)``: ``x`` scaled channel-wise by :meth:`gates`."""
        return x * self.gates(x)[:, :, None, None].to(x.dtype)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, kernel_size={self.kernel_size}"
