"""``soft_baselines.se``: Squeeze-and-Excitation (Hu et al. 2018) against a reference."""

from __future__ import annotations

import torch

from soft_baselines.se import SqueezeExcitation, bottleneck_width
from tests.helpers.soft_float32 import C, rand, randomise

# --------------------------------------------------------------------------- SE


def test_bottleneck_width() -> None:
    assert bottleneck_width(512, 16, 8) == 32
    assert bottleneck_width(64, 16, 8) == 8  # floored
    assert bottleneck_width(4, 16, 8) == 4  # never wider than the input
    assert bottleneck_width(64, 16, 1) == 4  # the paper's plain C // r
    assert bottleneck_width(8, 16, 1) == 1


def test_se_matches_reference() -> None:
    m = randomise(SqueezeExcitation(C, reduction=4)).double()
    x = rand(2, C, 5, 7, dtype=torch.float64)
    ref = torch.empty_like(x)
    for b in range(2):
        z = torch.stack([x[b, c].sum() / x[b, c].numel() for c in range(C)])
        hidden = torch.clamp(m.fc1.weight @ z + m.fc1.bias, min=0)
        s = 1 / (1 + torch.exp(-(m.fc2.weight @ hidden + m.fc2.bias)))
        for c in range(C):
            ref[b, c] = x[b, c] * s[c]
    torch.testing.assert_close(m(x), ref)


def test_se_gates_near_half_at_init() -> None:
    torch.manual_seed(0)
    s = SqueezeExcitation(64).gates(rand(4, 64, 6, 6))
    assert s.shape == (4, 64)
    assert ((s > 0.2) & (s < 0.8)).all()
