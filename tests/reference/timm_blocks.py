"""timm counterparts of Glimpse's soft-attention blocks, with the weights copied across.

timm (``timm.layers``) implements several of the same papers independently; it is the
strongest reference the tests have. Each ``to_timm_*`` function builds timm's module in the
configuration that computes the same function as the given Glimpse block and copies every
parameter and buffer by an explicit name-to-name mapping (shapes checked, no silent
broadcasting). Where the two differ by design, the function picks timm's option that
matches and the difference is listed in :data:`DIFFERENCES`.

``PAIRS`` maps a registered name to ``(glimpse kwargs, converter)`` for the configuration
compared by the equivalence tests and timed by ``benchmarks/bench_soft.py``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from timm.layers.cbam import CbamModule
from timm.layers.eca import EcaModule
from timm.layers.global_context import GlobalContext
from timm.layers.non_local_attn import NonLocalAttn
from timm.layers.selective_kernel import SelectiveKernel
from timm.layers.squeeze_excite import SEModule
from torch import Tensor, nn

from soft_baselines.cbam import CBAM
from soft_baselines.eca import EfficientChannelAttention
from soft_baselines.gcnet import GlobalContextBlock
from soft_baselines.nonlocal_block import NonLocalBlock
from soft_baselines.se import SqueezeExcitation
from soft_baselines.sk import SKBlock, SKConv

__all__ = [
    "DIFFERENCES",
    "PAIRS",
    "EcaModule",
    "SKResidual",
    "to_timm_cbam",
    "to_timm_eca",
    "to_timm_gc",
    "to_timm_nonlocal",
    "to_timm_se",
    "to_timm_sk",
    "to_timm_sk_block",
]

# Design differences between the two libraries (the tests use the equal configuration).
DIFFERENCES: dict[str, str] = {
    "se": "hidden width: timm make_divisible(C * rd_ratio, 8); Glimpse max(C // r, min(8, C))"
    " (equal at C = 64, r = 16: 8 both); linear vs 1x1-conv layers (same maths)",
    "eca": "timm floors the adaptive kernel size at 3; Glimpse allows 1 (C < 8)",
    "cbam": "timm's spatial conv has no bias and a BatchNorm after it, the paper (and"
    " Glimpse) a biased conv; timm's MLP has no bias by default (mlp_bias=False), Glimpse's"
    " has. Compared with mlp_bias=True and timm's BN set to the identity plus Glimpse's"
    " conv bias, in eval mode; no timm option for spatial=False",
    "gc": "timm's default fuses by scaling (fuse_scale) and rd_ratio 1/8, the paper and"
    " Glimpse by addition, 1/16; timm's LayerNorm2d has eps 1e-6, Glimpse's LayerNorm 1e-5"
    " (set equal in the comparison); Glimpse zero-inits the last conv's bias too",
    "nonlocal": "timm scales the logits by C ** -0.5 by default (use_scale); the paper and"
    " Glimpse do not (timm use_scale=False); timm has only the embedded Gaussian form and no"
    " sub-sampling",
    "sk": "timm splits the input channels across the paths by default (split_input) and uses"
    " groups=1; the paper and Glimpse feed every path all channels with grouped convs"
    " (timm split_input=False, groups=gcd(C, 32)); timm's SelectiveKernel is the conv alone,"
    " Glimpse's 'sk' the residual block x + BN(SKConv(x))",
}


def _copy(dst: Tensor, src: Tensor, what: str) -> None:
    if dst.shape != src.shape:
        raise ValueError(f"{what}: shape {tuple(src.shape)} -> {tuple(dst.shape)}")
    with torch.no_grad():
        dst.copy_(src)


def _copy_conv(dst: nn.Module, src: nn.Module, what: str, as_conv2d: bool = False) -> None:
    """Weight (and bias if ``src`` has one) from a conv or linear layer; ``as_conv2d``
    reshapes a ``(out, in)`` linear weight to a 1x1 convolution's ``(out, in, 1, 1)``."""
    w = src.weight[:, :, None, None] if as_conv2d else src.weight
    _copy(dst.weight, w, f"{what}.weight")
    if src.bias is not None or dst.bias is not None:
        if src.bias is None or dst.bias is None:
            raise ValueError(f"{what}: bias on one side only")
        _copy(dst.bias, src.bias, f"{what}.bias")


def _copy_bn(dst: nn.Module, src: nn.Module, what: str) -> None:
    for name in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
        _copy(getattr(dst, name), getattr(src, name), f"{what}.{name}")
    if dst.eps != src.eps or dst.momentum != src.momentum:
        raise ValueError(f"{what}: eps/momentum differ")


def _like(dst: nn.Module, src: nn.Module) -> nn.Module:
    """``dst`` on ``src``'s device and dtype and in its mode (before copying: a copy into
    float32 and a cast to float64 afterwards would lose the low bits)."""
    p = next(src.parameters())
    return dst.to(device=p.device, dtype=p.dtype).train(src.training)


def to_timm_se(g: SqueezeExcitation) -> SEModule:
    t = _like(SEModule(g.channels, rd_channels=g.hidden), g)
    _copy_conv(t.fc1, g.fc1, "fc1", as_conv2d=True)
    _copy_conv(t.fc2, g.fc2, "fc2", as_conv2d=True)
    return t


def to_timm_eca(g: EfficientChannelAttention) -> EcaModule:
    t = _like(EcaModule(channels=None, kernel_size=g.kernel_size), g)
    _copy_conv(t.conv, g.conv, "conv")
    return t


def to_timm_cbam(g: CBAM) -> CbamModule:
    if g.spatial_conv is None:
        raise ValueError("timm's CBAM always has the spatial attention")
    hidden = g.mlp[0].out_channels
    k = g.spatial_conv.kernel_size[0]
    t = CbamModule(g.channels, rd_channels=hidden, spatial_kernel_size=k, mlp_bias=True)
    t = _like(t, g)
    _copy_conv(t.channel.fc1, g.mlp[0], "channel.fc1")
    _copy_conv(t.channel.fc2, g.mlp[2], "channel.fc2")
    _copy(t.spatial.conv.conv.weight, g.spatial_conv.weight, "spatial.conv.weight")
    bn = t.spatial.conv.bn  # made the identity plus Glimpse's conv bias (eval mode only)
    with torch.no_grad():
        bn.weight.fill_(1.0)
        bn.running_mean.zero_()
        bn.running_var.fill_(1.0 - bn.eps)
    _copy(bn.bias, g.spatial_conv.bias, "spatial.conv.bn.bias")
    return t.eval()


def to_timm_gc(g: GlobalContextBlock) -> GlobalContext:
    add = g.fusion == "add"
    t = GlobalContext(
        g.channels,
        use_attn=g.pooling == "att",
        fuse_add=add,
        fuse_scale=not add,
        rd_channels=g.hidden,
    )
    t = _like(t, g)
    if g.context_conv is not None:
        _copy_conv(t.conv_attn, g.context_conv, "conv_attn")
    mlp = t.mlp_add if add else t.mlp_scale
    _copy_conv(mlp.fc1, g.transform[0], "mlp.fc1")
    ln = g.transform[1]
    _copy(mlp.norm.weight, ln.weight.view(-1), "mlp.norm.weight")
    _copy(mlp.norm.bias, ln.bias.view(-1), "mlp.norm.bias")
    mlp.norm.eps = ln.eps
    _copy_conv(mlp.fc2, g.transform[3], "mlp.fc2")
    return t


def to_timm_nonlocal(g: NonLocalBlock) -> NonLocalAttn:
    if g.pairwise != "embedded_gaussian" or g.sub_sample:
        raise ValueError("timm's NonLocalAttn: embedded Gaussian, no sub-sampling only")
    t = NonLocalAttn(g.channels, use_scale=False, rd_channels=g.inter_channels)
    t = _like(t, g)
    _copy_conv(t.t, g.theta, "t")
    _copy_conv(t.p, g.phi, "p")
    _copy_conv(t.g, g.g, "g")
    _copy_conv(t.z, g.w_z, "z")
    _copy_bn(t.norm, g.bn, "norm")
    return t


def to_timm_sk(g: SKConv) -> SelectiveKernel:
    # Glimpse branch m is a 3x3 conv with dilation m + 1: timm's kernel 2m + 3 kept 3x3.
    t = SelectiveKernel(
        g.channels,
        kernel_size=[2 * m + 3 for m in range(g.num_branches)],
        groups=g.groups,
        rd_channels=g.dim,
        split_input=False,
    )
    t = _like(t, g)
    for m, (tp, gp) in enumerate(zip(t.paths, g.branches, strict=True)):
        if tp.conv.dilation != gp[0].dilation or tp.conv.padding != gp[0].padding:
            raise ValueError(f"path {m}: dilation/padding differ")
        _copy_conv(tp.conv, gp[0], f"paths.{m}.conv")
        _copy_bn(tp.bn, gp[1], f"paths.{m}.bn")
    _copy_conv(t.attn.fc_reduce, g.fuse[0], "attn.fc_reduce", as_conv2d=True)
    _copy_bn(t.attn.bn, g.fuse[1], "attn.bn")
    _copy_conv(t.attn.fc_select, g.select, "attn.fc_select", as_conv2d=True)
    return t


class SKResidual(nn.Module):
    """``x + BN(timm SelectiveKernel(x))``: Glimpse's residual ``sk`` block around timm's."""

    def __init__(self, sk: SelectiveKernel, bn: nn.BatchNorm2d) -> None:
        super().__init__()
        self.sk = sk
        self.bn = bn

    def forward(self, x: Tensor) -> Tensor:
        return x + self.bn(self.sk(x))


def to_timm_sk_block(g: SKBlock) -> SKResidual:
    bn = _like(nn.BatchNorm2d(g.channels), g)
    _copy_bn(bn, g.bn, "bn")
    return SKResidual(to_timm_sk(g.conv), bn)


# name -> (Glimpse kwargs of the compared configuration, converter). Default kwargs except
# where the equal configuration needs one.
PAIRS: dict[str, tuple[dict, Callable[[nn.Module], nn.Module]]] = {
    "se": ({}, to_timm_se),
    "eca": ({}, to_timm_eca),
    "cbam": ({}, to_timm_cbam),
    "gc": ({}, to_timm_gc),
    "nonlocal": ({}, to_timm_nonlocal),
    "sk": ({}, to_timm_sk_block),
}
