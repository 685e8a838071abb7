"""Channel + spatial attention: CBAM (sequential) and BAM (parallel, residual).

- Woo, Park, Lee, Kweon (2018), *CBAM: Convolutional Block Attention Module* (ECCV 2018).
  Channel attention ``Mc = sigmoid(MLP(AvgPool(F)) + MLP(MaxPool(F)))`` with one shared
  bottleneck MLP, then spatial attention ``Ms = sigmoid(conv7x7([AvgPool_c(F'); MaxPool_c(F')]))``
  on the channel-refined map: ``F' = Mc * F``, ``F'' = Ms * F'``. Registered as ``"cbam"``.
- Park, Woo, Lee, Kweon (2018), *BAM: Bottleneck Attention Module* (BMVC 2018). Channel
  branch ``Mc = BN(MLP(AvgPool(F)))`` and spatial branch
  ``Ms = BN(conv1x1(conv3x3_d(conv3x3_d(conv1x1(F)))))`` (dilation ``d = 4``, reduction
  ``r = 16``) run in parallel and are broadcast-added: ``F' = F + F * sigmoid(Mc + Ms)``.
  Registered as ``"bam"``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from soft_baselines._checks import bottleneck_width, check_feature_map, check_positive_int
from soft_baselines._ops import spatial_mean
from soft_baselines.registry import rd_ratio_as_reduction, register

__all__ = ["BAM", "CBAM"]


@register("cbam", rd_ratio=rd_ratio_as_reduction, spatial_map=True)
class CBAM(nn.Module):
    """CBAM: channel attention (avg + max pooled, shared MLP), then 7x7 spatial attention.

    Shapes: ``(B, C, H, W) -> (B, C, H, W)``.

    Args:
        channels: ``C``.
        reduction: reduction ratio ``r`` of the shared channel MLP (paper: 16).
        kernel_size: odd side of the spatial-attention convolution (paper: 7).
        min_hidden: floor on the MLP hidden width (see ``soft_baselines.se.bottleneck_width``).
        spatial: ``False`` keeps only the channel attention (the paper's ablation).

    The two convolutions that feed a batch normalisation have no bias: BN subtracts the
    batch mean, so such a bias gets a zero gradient in training mode and does nothing in
    evaluation mode beyond shifting BN's running mean.

    Initialisation: PyTorch defaults. Both attention maps are sigmoid gates, so at init the
    block multiplies its input by roughly ``0.5 * 0.5``; like SE it is meant for the
    residual branch of a network, where that is harmless.
    """

    def __init__(
        self,
        channels: int,
        reduction: int = 16,
        kernel_size: int = 7,
        min_hidden: int = 8,
        spatial: bool = True,
    ) -> None:
        super().__init__()
        check_positive_int("kernel_size", kernel_size)
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd to keep H and W, got {kernel_size}")
        hidden = bottleneck_width(channels, reduction, min_hidden)
        self.channels = channels
        self.mlp = nn.Sequential(
            nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, channels, 1)
        )
        self.spatial_conv = (
            nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2) if spatial else None
        )

    def channel_attention(self, x: Tensor) -> Tensor:
        """``Mc``: ``(B, C, H, W) -> (B, C, 1, 1)`` in ``(0, 1)``.

        Fast path: one MLP call over both descriptors (stacked on the batch axis), the 1x1
        convolutions applied as ``linear`` on ``(2B, C)``, and the max pool taken with
        ``max`` (indices) rather than ``amax``: its backward scatters into the arg-max
        instead of comparing the whole map with the maximum. Where several positions tie
        for the maximum, the gradient goes to one of them instead of being shared; the
        forward is the same. With :func:`~soft_baselines._ops.spatial_mean` for the
        average pool, forward + backward went from parity with timm's CBAM to 0.80x its
        time at B=8, C=64, 32x32 and 64x64 on one CPU thread (BENCHMARKS.md, issue 19).
        """
        flat = x.flatten(2)
        desc = torch.cat([spatial_mean(x), flat.max(dim=2).values], dim=0)  # (2B, C)
        fc1, fc2 = self.mlp[0], self.mlp[2]
        hidden = F.relu(F.linear(desc, fc1.weight.flatten(1), fc1.bias))
        a, m = F.linear(hidden, fc2.weight.flatten(1), fc2.bias).chunk(2, dim=0)
        return torch.sigmoid(a + m)[..., None, None]

    def spatial_attention(self, x: Tensor) -> Tensor:
        """``Ms``: ``(B, C, H, W) -> (B, 1, H, W)`` in ``(0, 1)`` (max over channels with
        ``max``, as in :meth:`channel_attention`)."""
        if self.spatial_conv is None:
            raise ValueError("this CBAM was built with spatial=False")
        desc = torch.cat([x.mean(dim=1, keepdim=True), x.max(dim=1, keepdim=True).values], dim=1)
        return torch.sigmoid(self.spatial_conv(desc))

    def spatial_map(self, x: Tensor) -> Tensor | None:
        """The spatial gate itself: ``Ms`` of the channel-refined input ``Mc * x``, as the
        forward applies it: ``(B, C, H, W) -> (B, H, W)`` in ``(0, 1)``; ``None`` when
        built with ``spatial=False`` (channel attention only)."""
        if self.spatial_conv is None:
            return None
        check_feature_map(x, self.channels, type(self).__name__)
        refined = x * self.channel_attention(x).to(x.dtype)
        return self.spatial_attention(refined)[:, 0]

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, H, W) -> (B, C, H, W)``."""
        check_feature_map(x, self.channels, type(self).__name__)
        x = x * self.channel_attention(x).to(x.dtype)
        if self.spatial_conv is not None:
            x = x * self.spatial_attention(x).to(x.dtype)
        return x


@register("bam", rd_ratio=rd_ratio_as_reduction, spatial_map=True)
class BAM(nn.Module):
    """BAM: parallel channel and dilated spatial branches, ``F + F * sigmoid(Mc + Ms)``.

    Shapes: ``(B, C, H, W) -> (B, C, H, W)``.

    Args:
        channels: ``C``.
        reduction: reduction ratio ``r`` of both branches (paper: 16).
        dilation: dilation ``d`` of the two 3x3 convolutions of the spatial branch (paper: 4).
        min_hidden: floor on the hidden width of both branches
            (see ``soft_baselines.se.bottleneck_width``).

    The layers follow the paper's equations, with a ReLU after every hidden layer: channel
    ``BN(W1 relu(W0 GAP(F)))``; spatial ``BN(conv1x1(relu(conv3x3_d(relu(conv3x3_d(relu(
    conv1x1(F))))))))``. Both branches end in batch normalisation ("for scale adjustment");
    the channel branch normalises pooled ``(B, C)`` descriptors, so training mode needs a
    batch of at least 2 (PyTorch raises ``ValueError`` otherwise).

    The two convolutions that feed a batch normalisation have no bias: BN subtracts the
    batch mean, so such a bias gets a zero gradient in training mode and does nothing in
    evaluation mode beyond shifting BN's running mean.

    Initialisation: PyTorch defaults. The residual form ``1 + sigmoid(.)`` means the block
    starts as roughly ``1.5 * x`` (never below the identity), not as the identity.
    """

    def __init__(
        self, channels: int, reduction: int = 16, dilation: int = 4, min_hidden: int = 8
    ) -> None:
        super().__init__()
        check_positive_int("dilation", dilation)
        hidden = bottleneck_width(channels, reduction, min_hidden)
        self.channels = channels
        self.channel_branch = nn.Sequential(
            nn.Conv2d(channels, hidden, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1, bias=False),  # BN follows: a bias would cancel
            nn.BatchNorm2d(channels),
        )
        self.spatial_branch = nn.Sequential(
            nn.Conv2d(channels, hidden, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, padding=dilation, dilation=dilation),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, padding=dilation, dilation=dilation),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, 1, 1, bias=False),
            nn.BatchNorm2d(1),
        )

    def attention(self, x: Tensor) -> Tensor:
        """``sigmoid(Mc + Ms)``: ``(B, C, H, W) -> (B, C, H, W)`` in ``(0, 1)``."""
        check_feature_map(x, self.channels, type(self).__name__)
        mc = self.channel_branch(x.mean(dim=(2, 3), keepdim=True))  # (B, C, 1, 1)
        ms = self.spatial_branch(x)  # (B, 1, H, W)
        return torch.sigmoid(mc + ms)

    def spatial_map(self, x: Tensor) -> Tensor:
        """The gate itself, ``sigmoid(Mc + Ms)``, averaged over channels: ``(B, C, H, W) ->
        (B, H, W)`` in ``(0, 1)`` (the channel offsets ``Mc`` shift each channel's gate but
        keep the order of the positions that ``Ms`` sets)."""
        return self.attention(x).mean(dim=1)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, H, W) -> (B, C, H, W)``."""
        return x + x * self.attention(x).to(x.dtype)
