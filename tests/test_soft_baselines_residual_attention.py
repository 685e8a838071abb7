"""Residual attention module (``soft_baselines.residual_attention``): ``(1 + M) T``."""

from __future__ import annotations

import pytest
import torch

from soft_baselines.residual_attention import PreActBottleneck, ResidualAttention
from tests.helpers.soft import assert_all_parameters_get_gradients, rand, randomise


def test_output_is_one_plus_mask_times_trunk():
    m = randomise(ResidualAttention(8, depth=2, p=0), scale=0.3).eval()
    x = rand(2, 8, 7, 9)
    with torch.no_grad():
        mask = m.mask(x)
        assert ((mask > 0) & (mask < 1)).all()
        torch.testing.assert_close(m(x), (1 + mask) * m.trunk(x))


def test_units_and_trunk_start_as_identity_so_block_is_one_plus_mask():
    torch.manual_seed(0)
    m = ResidualAttention(8).double().eval()
    x = rand(2, 8, 5, 6)
    with torch.no_grad():
        torch.testing.assert_close(PreActBottleneck(8).double()(x), x, rtol=0, atol=0)
        torch.testing.assert_close(m.trunk(x), x, rtol=0, atol=0)
        torch.testing.assert_close(m(x), (1 + m.mask(x)) * x)


@pytest.mark.parametrize("depth", [1, 2, 3])
@pytest.mark.parametrize(("h", "w"), [(1, 1), (5, 7), (9, 4)])
def test_mask_returns_to_input_size(depth: int, h: int, w: int):
    m = ResidualAttention(4, depth=depth).double()
    assert m.mask(rand(2, 4, h, w)).shape == (2, 4, h, w)


def test_gradients_and_bad_arguments():
    assert_all_parameters_get_gradients(
        randomise(ResidualAttention(8, depth=2), scale=0.3), rand(2, 8, 6, 6)
    )
    with pytest.raises(ValueError):
        ResidualAttention(8, depth=0)
    with pytest.raises(ValueError):
        ResidualAttention(8, t=-1)
