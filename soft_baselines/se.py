"""Squeeze-and-excitation channel attention.

Hu, Shen, Sun (2018), *Squeeze-and-Excitation Networks* (CVPR 2018; extended with Albanie
and Wu in TPAMI 2019). The block rescales each channel by a gate computed from the whole
feature map: ``z = GAP(x)`` (squeeze), ``s = sigmoid(W2 relu(W1 z))`` (excitation, a
bottleneck MLP with reduction ratio ``r``), ``y = s * x`` (scale).

Registered as ``"se"``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from soft_baselines._checks import bottleneck_width, check_feature_map, check_positive_int
from soft_baselines._ops import spatial_mean
from soft_baselines.registry import rd_ratio_as_reduction, register

__all__ = ["SqueezeExcitation", "bottleneck_width", "check_feature_map", "check_positive_int"]


@register("se", rd_ratio=rd_ratio_as_reduction, spatial_map=False)
class SqueezeExcitation(nn.Module):
    """Squeeze-and-excitation: per-channel sigmoid gates from globally pooled features.

    Shapes: ``(B, C, H, W) -> (B, C, H, W)``.

    Args:
        channels: ``C``.
        reduction: reduction ratio ``r`` of the excitation MLP (paper default 16).
        min_hidden: floor on the hidden width, see :func:`bottleneck_width` (default 8;
            set to 1 for the paper's plain ``C // r``, itself floored at 1).

    Initialisation: PyTorch's default for both linear layers, as in the paper. The block is
    a multiplicative gate, not a residual branch, so it does not start as the identity: at
    init the gates are ``sigmoid`` of small pre-activations, i.e. close to 0.5, and the
    block roughly halves its input. Inside a residual network (SE-ResNet, see
    ``soft_baselines.backbones``) it sits on the residual branch, so the network as a whole
    is still dominated by the identity shortcuts.
    """

    def __init__(self, channels: int, reduction: int = 16, min_hidden: int = 8) -> None:
        super().__init__()
        hidden = bottleneck_width(channels, reduction, min_hidden)
        self.channels = channels
        self.hidden = hidden
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)

    def gates(self, x: Tensor) -> Tensor:
        """Channel gates in ``(0, 1)``: ``(B, C, H, W) -> (B, C)``."""
        check_feature_map(x, self.channels, type(self).__name__)
        z = spatial_mean(x)
        return torch.sigmoid(self.fc2(torch.relu(self.fc1(z))))

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, H, W) -> (B, C, H, W)``: ``x`` scaled channel-wise by :meth:`gates`."""
        s = self.gates(x)
        return x * s[:, :, None, None].to(x.dtype)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, hidden={self.hidden}"
