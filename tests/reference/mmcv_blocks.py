"""mmcv-lite counterparts of Glimpse's non-local and global-context blocks, weights copied.

mmcv's pure-PyTorch bricks (``mmcv.cnn.bricks``: ``NonLocal2d``, ``ContextBlock``) are a
second independent implementation of two papers. mmcv-lite is not a project dependency
(it pulls in mmengine and OpenCV); the tests that use this module skip without it.

Differences by design, handled by the configuration compared:

- ``NonLocal2d`` scales embedded-Gaussian logits by ``C' ** -0.5`` by default
  (``use_scale``); the paper and Glimpse do not (compared with ``use_scale=False``). Its
  output conv has no norm by default; Glimpse's ``W_z`` is followed by BN (compared with
  ``norm_cfg=dict(type="BN")``, where mmcv drops the conv bias: Glimpse's bias is folded
  into the running mean, exact in eval mode, and cancels in training mode). Its
  sub-sampling pools 2x2 with floor; Glimpse keeps odd edges (ceil): equal on even sizes.
- ``ContextBlock`` rounds its hidden width ``int(C * ratio)``; Glimpse's floor is
  ``max(round(C * ratio), min(8, C), 2)``: compared where they agree.
"""

from __future__ import annotations

import torch
from mmcv.cnn.bricks import ContextBlock, NonLocal2d
from torch import Tensor, nn

from soft_baselines.gcnet import GlobalContextBlock
from soft_baselines.nonlocal_block import NonLocalBlock

__all__ = ["to_mmcv_context_block", "to_mmcv_nonlocal"]


def _copy(dst: Tensor, src: Tensor, what: str) -> None:
    if dst.shape != src.shape:
        raise ValueError(f"{what}: shape {tuple(src.shape)} -> {tuple(dst.shape)}")
    with torch.no_grad():
        dst.copy_(src)


def _copy_conv(dst: nn.Conv2d, src: nn.Module, what: str) -> None:
    _copy(dst.weight, src.weight.view(dst.weight.shape), f"{what}.weight")
    if dst.bias is not None:
        _copy(dst.bias, src.bias, f"{what}.bias")


def _like(dst: nn.Module, src: nn.Module) -> nn.Module:
    p = next(src.parameters())
    return dst.to(device=p.device, dtype=p.dtype).train(src.training)


def to_mmcv_nonlocal(g: NonLocalBlock) -> NonLocal2d:
    if g.channels % g.inter_channels:
        raise ValueError("mmcv's inter width is in_channels // reduction")
    t = NonLocal2d(
        g.channels,
        reduction=g.channels // g.inter_channels,
        use_scale=False,
        mode=g.pairwise,
        sub_sample=g.sub_sample,
        norm_cfg={"type": "BN"},
    )
    t = _like(t, g)

    def conv(m: nn.Module) -> nn.Conv2d:  # ConvModule, or ConvModule + max pool
        return (m[0] if isinstance(m, nn.Sequential) else m).conv

    _copy_conv(conv(t.g), g.g, "g")
    if g.theta is not None:
        _copy_conv(conv(t.theta), g.theta, "theta")
        _copy_conv(conv(t.phi), g.phi, "phi")
    if g.concat_project is not None:
        _copy_conv(t.concat_project.conv, g.concat_project, "concat_project")
    _copy_conv(t.conv_out.conv, g.w_z, "conv_out")  # weight only: mmcv's has no bias here
    bn, gbn = t.conv_out.norm, g.bn
    for name in ("weight", "bias", "running_var"):
        _copy(getattr(bn, name), getattr(gbn, name), f"conv_out.norm.{name}")
    _copy(bn.running_mean, gbn.running_mean - g.w_z.bias, "conv_out.norm.running_mean")
    bn.eps = gbn.eps
    return t


def to_mmcv_context_block(g: GlobalContextBlock) -> ContextBlock:
    ratio = g.hidden / g.channels
    t = ContextBlock(
        g.channels,
        ratio=ratio,
        pooling_type=g.pooling,
        fusion_types=("channel_add",) if g.fusion == "add" else ("channel_mul",),
    )
    if t.planes != g.hidden:
        raise ValueError(f"hidden widths differ: mmcv {t.planes}, Glimpse {g.hidden}")
    t = _like(t, g)
    if g.context_conv is not None:
        _copy_conv(t.conv_mask, g.context_conv, "conv_mask")
    seq = t.channel_add_conv if g.fusion == "add" else t.channel_mul_conv
    for i in (0, 1, 3):
        _copy(seq[i].weight, g.transform[i].weight, f"transform.{i}.weight")
        _copy(seq[i].bias, g.transform[i].bias, f"transform.{i}.bias")
    return t
