"""``soft_baselines.sk``: Selective Kernel convolution (Li et al. 2019)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from soft_baselines.sk import SKBlock, SKConv
from tests.helpers.soft_float32 import C, rand, randomise

# --------------------------------------------------------------------------- SK


@pytest.mark.parametrize(("channels", "groups"), [(12, 4), (3, 1), (64, 32), (48, 16)])
def test_sk_groups_use_gcd(channels: int, groups: int) -> None:
    conv = SKConv(channels)
    assert conv.groups == groups
    assert conv.branches[0][0].groups == groups
    assert conv.dim == max(channels // 16, 32)


def test_sk_branch_dilations_and_selection_weights() -> None:
    conv = randomise(SKConv(C, branches=3)).eval()
    assert [b[0].dilation for b in conv.branches] == [(1, 1), (2, 2), (3, 3)]
    u, a = conv.branch_weights(rand(2, C, 5, 7))
    assert u.shape == (2, 3, C, 5, 7) and a.shape == (2, 3, C)
    torch.testing.assert_close(a.sum(dim=1), torch.ones(2, C))


def test_sk_uniform_selection_is_branch_mean() -> None:
    conv = randomise(SKConv(C, branches=3)).eval()
    nn.init.zeros_(conv.select.weight)
    x = rand(2, C, 5, 7)
    u, a = conv.branch_weights(x)
    torch.testing.assert_close(a, torch.full_like(a, 1 / 3))
    torch.testing.assert_close(conv(x), u.mean(dim=1))


def test_sk_block_matches_composition() -> None:
    m = randomise(SKBlock(C)).eval()
    x = rand(2, C, 5, 7)
    torch.testing.assert_close(m(x), x + m.bn(m.conv(x)))
