"""Point-wise spatial attention (PSANet): per-position predicted collect and distribute maps.

Zhao, Zhang, Liu, Shi, Loy, Lin, Jia (2018), *PSANet: Point-wise Spatial Attention Network
for Scene Parsing* (ECCV 2018). Every position ``i`` predicts, from its own feature, an
over-complete map over *relative* positions, ``(2H - 1) x (2W - 1)`` values; the ``H x W``
window of it centred on ``i`` gives one weight for every position of the map. With
``x`` reduced to ``C'`` channels (1x1 conv + BN + ReLU):

- **Collect**: ``z^c_i = 1/N sum_j a^c_i[j - i] x_j``: position ``i`` gathers from all ``j``
  with the weights it predicted.
- **Distribute**: ``z^d_i = 1/N sum_j a^d_j[i - j] x_j``: each ``j`` sends its feature to
  all ``i`` with the weights ``j`` predicted.

Each map is predicted by ``conv1x1-BN-ReLU-conv1x1`` from the reduced features. The two
contexts are concatenated and fused (1x1 conv + BN to ``C``); here the fusion is a residual
branch with zero-initialised BN, ``y = x + fuse([z^c; z^d])``, exactly the identity at init
(the paper concatenates the result with the input for the segmentation head).

The map size is tied to the input size, as in the paper (which fixes it for its crops):
the last prediction conv has ``(2 H_max - 1)(2 W_max - 1)`` outputs for ``max_size =
(H_max, W_max)``; an input of ``H <= H_max``, ``W <= W_max`` uses the rows of that conv for
its own offsets (relative position ``(dy, dx)`` always has the same output), so cost grows
with the input, not ``max_size``; larger inputs raise ``ValueError``. The ``N x N``
attention matrices are built by a gather (memory ``O(B N^2)``, as the paper's).

Registered as ``"psanet"``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from soft_baselines._checks import check_feature_map, check_positive_int
from soft_baselines.registry import register

__all__ = ["PointwiseSpatialAttention", "relative_index"]


def relative_index(h: int, w: int, device=None) -> Tensor:
    """``(N, N)`` long: ``idx[i, j]`` = offset channel of ``j - i`` in a ``(2H-1)(2W-1)`` map,
    ``(dy + H - 1) * (2W - 1) + (dx + W - 1)``, positions in row-major order."""
    ys, xs = torch.meshgrid(
        torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij"
    )
    ys, xs = ys.reshape(-1), xs.reshape(-1)
    dy = ys[None, :] - ys[:, None] + h - 1
    dx = xs[None, :] - xs[:, None] + w - 1
    return dy * (2 * w - 1) + dx


def _offset_channels(h: int, w: int, h_max: int, w_max: int, device=None) -> Tensor:
    """Rows of the ``max_size`` prediction conv for the offsets of an ``h x w`` map."""
    dy = torch.arange(-(h - 1), h, device=device) + h_max - 1
    dx = torch.arange(-(w - 1), w, device=device) + w_max - 1
    return (dy[:, None] * (2 * w_max - 1) + dx[None, :]).reshape(-1)


class _MaskHead(nn.Module):
    def __init__(self, c: int, out: int) -> None:
        super().__init__()
        self.hidden = nn.Sequential(
            nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True)
        )
        self.predict = nn.Conv2d(c, out, 1)

    def forward(self, x: Tensor, rows: Tensor) -> Tensor:
        """Predicted maps for the offsets ``rows``: ``(B, c, H, W) -> (B, len(rows), N)``."""
        h = self.hidden(x)
        w = self.predict.weight[rows]
        return F.conv2d(h, w.to(h.dtype), self.predict.bias[rows].to(h.dtype)).flatten(2)


@register("psanet", spatial_map=True)
class PointwiseSpatialAttention(nn.Module):
    """PSANet's bi-directional point-wise spatial attention, ``x + fuse([collect;
    distribute])``, exactly the identity at init.

    Shapes: ``(B, C, H, W) -> (B, C, H, W)`` for ``H <= max_size[0]``, ``W <= max_size[1]``.

    Args:
        channels: ``C``.
        inter_channels: ``C'`` of the reduced features (default ``max(1, C // 2)``).
        max_size: largest ``(H, W)`` accepted (default ``(32, 32)``).
    """

    def __init__(
        self,
        channels: int,
        inter_channels: int | None = None,
        max_size: tuple[int, int] = (32, 32),
    ) -> None:
        super().__init__()
        self.channels = check_positive_int("channels", channels)
        ci = max(1, channels // 2) if inter_channels is None else inter_channels
        self.inter_channels = check_positive_int("inter_channels", ci)
        if not (isinstance(max_size, tuple | list) and len(max_size) == 2):
            raise ValueError(f"max_size must be (H_max, W_max), got {max_size!r}")
        self.max_size = (
            check_positive_int("max_size[0]", max_size[0]),
            check_positive_int("max_size[1]", max_size[1]),
        )
        hm, wm = self.max_size
        self.reduce = nn.Sequential(
            nn.Conv2d(channels, ci, 1, bias=False), nn.BatchNorm2d(ci), nn.ReLU(inplace=True)
        )
        offsets = (2 * hm - 1) * (2 * wm - 1)
        self.collect_head = _MaskHead(ci, offsets)
        self.distribute_head = _MaskHead(ci, offsets)
        self.fuse = nn.Sequential(
            nn.Conv2d(2 * ci, channels, 1, bias=False), nn.BatchNorm2d(channels)
        )
        nn.init.zeros_(self.fuse[1].weight)
        nn.init.zeros_(self.fuse[1].bias)

    def attention(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Reduced features ``(B, N, C')`` and the collect / distribute matrices ``(B, N, N)``
        (row ``i``: the weights ``i`` receives from every ``j``, before ``1/N``)."""
        check_feature_map(x, self.channels, type(self).__name__)
        b, _, h, w = x.shape
        hm, wm = self.max_size
        if h > hm or w > wm:
            raise ValueError(f"input {h}x{w} exceeds max_size {hm}x{wm} of this PSANet block")
        xr = self.reduce(x)
        rows = _offset_channels(h, w, hm, wm, device=x.device)
        idx = relative_index(h, w, device=x.device).expand(b, -1, -1)  # (B, N, N)
        a_c = self.collect_head(xr, rows).transpose(1, 2)  # (B, N_i, R): map predicted at i
        a_d = self.distribute_head(xr, rows).transpose(1, 2)  # (B, N_j, R): map predicted at j
        collect = a_c.gather(2, idx)  # [b, i, j] = a_c[b, i, off(j - i)]
        distribute = a_d.gather(2, idx).transpose(1, 2)  # [b, i, j] = a_d[b, j, off(i - j)]
        return xr.flatten(2).transpose(1, 2), collect, distribute

    def spatial_map(self, x: Tensor) -> Tensor:
        """Attention received per position: the column sums over all positions ``i`` of
        the collect and distribute matrices added (both are "the weight ``i`` receives from
        ``j``"), ``(B, C, H, W) -> (B, H, W)``. The predicted maps are not normalised, so
        the sums are signed (the soft-map API clamps negatives)."""
        _, collect, distribute = self.attention(x)
        b, _, h, w = x.shape
        both = collect + distribute
        return both.to(torch.promote_types(both.dtype, torch.float32)).sum(1).view(b, h, w)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, H, W) -> (B, C, H, W)``."""
        feats, collect, distribute = self.attention(x)
        n = feats.shape[1]
        z = torch.cat([collect @ feats, distribute @ feats], dim=2) / n  # (B, N, 2C')
        b, _, h, w = x.shape
        return x + self.fuse(z.transpose(1, 2).reshape(b, -1, h, w))

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, inter_channels={self.inter_channels}, "
            f"max_size={self.max_size}"
        )
