"""ECA (``soft_baselines.eca``): adaptive kernel size and the gate against the formula."""

from __future__ import annotations

import math

import pytest
import torch

from soft_baselines import create
from soft_baselines.eca import EfficientChannelAttention, eca_kernel_size
from tests.helpers.soft import assert_all_parameters_get_gradients, rand, randomise


@pytest.mark.parametrize(
    ("channels", "k"),
    [(1, 1), (2, 1), (4, 1), (7, 1), (8, 3), (16, 3), (64, 3), (128, 5), (256, 5), (512, 5)],
)
def test_adaptive_kernel_size_follows_psi(channels: int, k: int):
    # psi(C) = |log2(C)/2 + 1/2|_odd: e.g. C = 256 -> 4.5 -> 4 -> 5.
    assert eca_kernel_size(channels) == k
    assert create("eca", channels).kernel_size == k


def test_gate_matches_sliding_window_formula():
    c, k = 7, 5
    m = randomise(EfficientChannelAttention(c, kernel_size=k))
    x = rand(2, c, 3, 4)
    z = x.mean(dim=(2, 3))
    w = m.conv.weight[0, 0].detach()
    expected = torch.empty(2, c, dtype=x.dtype)
    for b in range(2):
        for ch in range(c):
            s = sum(
                w[t] * z[b, ch + t - k // 2] for t in range(k) if 0 <= ch + t - k // 2 < c
            )  # zero padding at both ends of the channel axis
            expected[b, ch] = 1 / (1 + math.exp(-float(s)))
    torch.testing.assert_close(m.gates(x), expected)
    torch.testing.assert_close(m(x), x * expected[:, :, None, None])


def test_parameters_and_gradients():
    m = randomise(create("eca", 16))
    assert sum(p.numel() for p in m.parameters()) == 3  # k weights, no bias
    assert_all_parameters_get_gradients(m, rand(2, 16, 3, 3))


@pytest.mark.parametrize("bad", [{"kernel_size": 4}, {"kernel_size": 0}, {"gamma": 0}])
def test_bad_arguments(bad: dict):
    with pytest.raises(ValueError):
        EfficientChannelAttention(16, **bad)
