"""ANN (``soft_baselines.ann``): pyramid sampling against bin averages written out, the
attention against an explicit softmax over the anchors."""

from __future__ import annotations

import math

import pytest
import torch

from soft_baselines import create
from soft_baselines.ann import AsymmetricFusionNonLocal, pyramid_sample
from tests.helpers.soft import (
    assert_all_parameters_get_gradients,
    assert_identity_at_init,
    rand,
    randomise,
)


def _bins(n: int, s: int) -> list[tuple[int, int]]:
    # Adaptive pooling bin k of s over n: [floor(k n / s), ceil((k + 1) n / s)).
    return [((k * n) // s, -((-(k + 1) * n) // s)) for k in range(s)]


def _pyramid_reference(x: torch.Tensor, sizes: tuple[int, ...]) -> torch.Tensor:
    _b, _c, h, w = x.shape
    anchors = []
    for s in sizes:
        for r0, r1 in _bins(h, s):
            for c0, c1 in _bins(w, s):
                anchors.append(x[:, :, r0:r1, c0:c1].mean(dim=(2, 3)))
    return torch.stack(anchors, dim=2)


@pytest.mark.parametrize(("h", "w"), [(7, 5), (8, 8), (2, 3)])
def test_pyramid_sample_matches_bin_averages(h: int, w: int):
    x = rand(2, 3, h, w)
    sizes = (1, 3, 6, 8)
    out = pyramid_sample(x, sizes)
    assert out.shape == (2, 3, 110)
    torch.testing.assert_close(out, _pyramid_reference(x, sizes))


def _context_reference(m, x, low):
    q, k, v = m.embed(x, low)
    logits = q @ k.transpose(1, 2) / math.sqrt(m.key_channels)
    e = torch.exp(logits - logits.amax(dim=-1, keepdim=True))
    y = (e / e.sum(dim=-1, keepdim=True)) @ v  # (B, N, c)
    b, _, h, w = x.shape
    return m.out(y.transpose(1, 2).reshape(b, -1, h, w))


def test_apnb_matches_explicit_softmax():
    m = randomise(create("apnb", 6, sizes=(1, 2, 3))).eval()
    x = rand(2, 6, 5, 4)
    with torch.no_grad():
        # keys and values really are the pooled anchors of the shared embedding
        _, k, v = m.embed(x, x)
        torch.testing.assert_close(k, _pyramid_reference(m.key(x), (1, 2, 3)).transpose(1, 2))
        torch.testing.assert_close(v, _pyramid_reference(m.value(x), (1, 2, 3)).transpose(1, 2))
        expected = x + m.fuse(torch.cat([_context_reference(m, x, x), x], dim=1))
        torch.testing.assert_close(m(x), expected)


def test_afnb_fuses_a_second_map_of_other_size_and_width():
    m = randomise(AsymmetricFusionNonLocal(6, low_channels=4, sizes=(1, 3))).eval()
    x, low = rand(2, 6, 5, 4), rand(2, 4, 9, 7, seed=1)
    with torch.no_grad():
        expected = x + m.fuse(torch.cat([_context_reference(m, x, low), x], dim=1))
        torch.testing.assert_close(m(x, low), expected)
    with pytest.raises(ValueError):
        m(x, rand(2, 6, 9, 7))  # wrong low channels
    with pytest.raises(ValueError):
        m(x, rand(3, 4, 9, 7))  # batch mismatch


@pytest.mark.parametrize("name", ["apnb", "afnb"])
def test_identity_at_init_and_gradients(name: str):
    torch.manual_seed(0)
    x = rand(2, 8, 6, 7)
    assert_identity_at_init(create(name, 8).double(), x)
    assert_all_parameters_get_gradients(randomise(create(name, 8), scale=0.3), x)
