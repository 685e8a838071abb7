"""``soft_baselines.cbam``: CBAM (Woo et al. 2018) and BAM (Park et al. 2018) against references."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from soft_baselines.cbam import BAM, CBAM
from tests.helpers.soft_float32 import C, rand, randomise

# --------------------------------------------------------------------------- CBAM / BAM


def test_cbam_matches_reference() -> None:
    m = randomise(CBAM(C, reduction=4, kernel_size=3)).double()
    x = rand(2, C, 4, 5, dtype=torch.float64)
    w1, b1 = m.mlp[0].weight[:, :, 0, 0], m.mlp[0].bias
    w2, b2 = m.mlp[2].weight[:, :, 0, 0], m.mlp[2].bias
    k, kb = m.spatial_conv.weight[0], m.spatial_conv.bias[0]  # (2, 3, 3)

    def mlp(v: Tensor) -> Tensor:
        return w2 @ torch.clamp(w1 @ v + b1, min=0) + b2

    ref = torch.empty_like(x)
    for b in range(2):
        flat = x[b].reshape(C, -1)
        mc = torch.sigmoid(mlp(flat.mean(1)) + mlp(flat.max(1).values))
        f1 = x[b] * mc[:, None, None]
        desc = torch.stack([f1.mean(0), f1.max(0).values])  # (2, H, W)
        padded = F.pad(desc, (1, 1, 1, 1))
        ms = torch.empty(4, 5, dtype=x.dtype)
        for i in range(4):
            for j in range(5):
                ms[i, j] = torch.sigmoid((padded[:, i : i + 3, j : j + 3] * k).sum() + kb)
        ref[b] = f1 * ms
    torch.testing.assert_close(m(x), ref)


def test_cbam_channel_only_is_a_channel_gate() -> None:
    m = CBAM(C, spatial=False)
    x = rand(2, C, 4, 5).abs() + 0.1
    ratio = m(x) / x
    # One gate per (image, channel), constant over positions.
    torch.testing.assert_close(ratio, ratio[:, :, :1, :1].expand_as(ratio))
    with pytest.raises(ValueError, match="spatial=False"):
        m.spatial_attention(x)


def test_bam_residual_form() -> None:
    m = randomise(BAM(C, reduction=4, dilation=2)).double()
    x = rand(2, C, 5, 7, dtype=torch.float64)
    a = m.attention(x)
    assert ((a > 0) & (a < 1)).all()
    torch.testing.assert_close(m(x), x * (1 + a))
    # The channel term is constant over positions and the spatial term over channels:
    # logit(a) = Mc + Ms is an outer sum.
    logit = torch.log(a / (1 - a))
    outer = logit[:, :, :1, :1] + logit[:, :1, :, :] - logit[:, :1, :1, :1]
    torch.testing.assert_close(logit, outer)
