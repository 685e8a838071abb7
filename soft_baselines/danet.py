"""Dual attention: position attention (PAM) and channel attention (CAM) modules.

Paper: Jun Fu, Jing Liu, Haijie Tian, Yong Li, Yongjun Bao, Zhiwei Fang, Hanqing Lu (2019),
"Dual Attention Network for Scene Segmentation", CVPR 2019.

- PAM: query/key maps ``B, C`` (``C/8`` channels) and values ``D`` (``C`` channels);
  ``S = softmax(Bᵀ C)`` over the ``N = H·W`` positions; ``E = α · D Sᵀ + A`` with a
  learnable ``α`` initialised to 0.
- CAM: no embeddings; channel energies ``X Xᵀ`` (``C × C``); the paper feeds
  ``max_row(energy) − energy`` to the softmax; ``E = β · softmax(·) X + A`` with a learnable
  ``β`` initialised to 0. Because a softmax is shift-invariant per row, this equals
  ``softmax(−X Xᵀ)``: the subtraction of the row maximum is kept because it is the paper's
  formulation, and it also keeps the exponent ≤ 0.
- DANet sums the two modules' outputs. The paper wraps each module in 3×3 conv + BN + ReLU
  layers of its segmentation head; these are not part of the drop-in blocks here.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from soft_baselines._checks import check_feature_map, check_positive_int
from soft_baselines._maps import received
from soft_baselines.registry import register

__all__ = ["ChannelAttention", "DualAttention", "PositionAttention"]


@register("pam", kind="block", spatial_map=True)
class PositionAttention(nn.Module):
    """DANet position attention module: ``x + α · (attention over all H·W positions)``.

    Args:
        channels: input/output channels ``C``.
        reduction: query/key channels are ``max(1, C // reduction)``; default 8 (paper).

    Shapes: ``(B, C, H, W) -> (B, C, H, W)``; memory ``O((H·W)²)``.

    Initialisation: the learnable scale ``α`` (``alpha``) is zero-initialised, so the block
    starts as the exact identity.
    """

    def __init__(self, channels: int, reduction: int = 8) -> None:
        super().__init__()
        self.channels = check_positive_int("channels", channels)
        self.reduction = check_positive_int("reduction", reduction)
        qk = max(1, channels // reduction)
        self.query = nn.Conv2d(channels, qk, 1)
        self.key = nn.Conv2d(channels, qk, 1)
        self.value = nn.Conv2d(channels, channels, 1)
        self.alpha = nn.Parameter(torch.zeros(1))

    def attention(self, x: Tensor) -> Tensor:
        """Spatial attention ``S``: ``(B, N, N)``, row ``i`` = weights position ``i`` gives."""
        q = self.query(x).flatten(2)  # (B, qk, N)
        k = self.key(x).flatten(2)
        energy = torch.bmm(q.transpose(1, 2), k)  # (B, N, N)
        return torch.softmax(energy, dim=-1, dtype=torch.promote_types(energy.dtype, torch.float32))

    def spatial_map(self, x: Tensor) -> Tensor:
        """Attention received per position: the column sums of ``S`` over all queries,
        ``(B, C, H, W) -> (B, H, W)``."""
        check_feature_map(x, self.channels, type(self).__name__)
        b, _, h, w = x.shape
        return received(self.attention(x)).view(b, h, w)

    def branch(self, x: Tensor) -> Tensor:
        """The scaled residual branch ``α · D Sᵀ``: ``(B, C, H, W) -> (B, C, H, W)``."""
        b, c, h, w = x.shape
        v = self.value(x).flatten(2)  # (B, C, N)
        out = torch.bmm(v, self.attention(x).to(v.dtype).transpose(1, 2))
        return self.alpha.to(out.dtype) * out.reshape(b, c, h, w)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, H, W) -> (B, C, H, W)``."""
        check_feature_map(x, self.channels, type(self).__name__)
        return x + self.branch(x)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, reduction={self.reduction}"


@register("cam", kind="block", spatial_map=False)
class ChannelAttention(nn.Module):
    """DANet channel attention module: ``x + β · (attention over the C channels)``.

    Args:
        channels: input/output channels ``C`` (the module has no embeddings; ``channels``
            is checked against the input).

    Shapes: ``(B, C, H, W) -> (B, C, H, W)``.

    Initialisation: the learnable scale ``β`` (``beta``) is zero-initialised, so the block
    starts as the exact identity.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = check_positive_int("channels", channels)
        self.beta = nn.Parameter(torch.zeros(1))

    def attention(self, x: Tensor) -> Tensor:
        """Channel attention: ``(B, C, C)``, row ``i`` = weights channel ``i`` gives.

        Computed in (at least) float32 with autocast off: the energies sum over ``H·W``.
        """
        work = torch.promote_types(x.dtype, torch.float32)
        with torch.autocast(device_type=x.device.type, enabled=False):
            f = x.flatten(2).to(work)  # (B, C, N)
            energy = torch.bmm(f, f.transpose(1, 2))  # (B, C, C)
            energy_new = energy.amax(dim=-1, keepdim=True) - energy
            return torch.softmax(energy_new, dim=-1)

    def branch(self, x: Tensor) -> Tensor:
        """The scaled residual branch ``β · softmax(·) X``: ``(B, C, H, W) -> (B, C, H, W)``."""
        b, c, h, w = x.shape
        f = x.flatten(2)
        out = torch.bmm(self.attention(x).to(f.dtype), f)
        return self.beta.to(out.dtype) * out.reshape(b, c, h, w)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, H, W) -> (B, C, H, W)``."""
        check_feature_map(x, self.channels, type(self).__name__)
        return x + self.branch(x)

    def extra_repr(self) -> str:
        return f"channels={self.channels}"


@register("danet", kind="block", spatial_map=True)
class DualAttention(nn.Module):
    """DANet dual attention: PAM and CAM in parallel, their outputs summed.

    ``forward(x) = x + pam.branch(x) + cam.branch(x)``, i.e. ``PAM(x) + CAM(x) − x``: the
    sum of the two modules' outputs with the input counted once, so the block keeps the
    drop-in contract.

    Args:
        channels: input/output channels ``C``.
        reduction: PAM query/key reduction; default 8.

    Shapes: ``(B, C, H, W) -> (B, C, H, W)``.

    Initialisation: ``α`` and ``β`` are zero-initialised, so the block starts as the exact
    identity.
    """

    def __init__(self, channels: int, reduction: int = 8) -> None:
        super().__init__()
        self.channels = check_positive_int("channels", channels)
        self.pam = PositionAttention(channels, reduction)
        self.cam = ChannelAttention(channels)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, H, W) -> (B, C, H, W)``."""
        check_feature_map(x, self.channels, type(self).__name__)
        return x + self.pam.branch(x) + self.cam.branch(x)

    def spatial_map(self, x: Tensor) -> Tensor:
        """PAM's map (:meth:`PositionAttention.spatial_map`); CAM attends over channels
        only and adds nothing spatial. ``(B, C, H, W) -> (B, H, W)``."""
        check_feature_map(x, self.channels, type(self).__name__)
        return self.pam.spatial_map(x)

    def extra_repr(self) -> str:
        return f"channels={self.channels}"
