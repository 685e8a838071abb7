"""Region-based non-local (``soft_baselines.rnl``): region sums and softmax written out."""

from __future__ import annotations

import pytest
import torch

from soft_baselines.rnl import RegionNonLocal
from tests.helpers.soft import (
    assert_all_parameters_get_gradients,
    assert_identity_at_init,
    conv1x1,
    rand,
    randomise,
)


def _reference(m: RegionNonLocal, x: torch.Tensor) -> torch.Tensor:
    b, _, h, w = x.shape
    k, r = m.kernel_size, m.kernel_size // 2
    emb = torch.zeros(b, m.inter_channels, h + 2 * r, w + 2 * r, dtype=x.dtype)
    for i in range(h):
        for j in range(w):
            for n in range(b):
                emb[n, :, i + r, j + r] = conv1x1(m.embed, x[n, :, i, j])
    wd = m.region.weight[:, 0]  # (C', k, k): one k x k filter per channel
    theta = torch.zeros(b, m.inter_channels, h * w, dtype=x.dtype)
    for i in range(h):
        for j in range(w):
            window = emb[:, :, i : i + k, j : j + k]  # zero outside the map
            theta[:, :, i * w + j] = (window * wd).sum(dim=(2, 3)) + m.region.bias
    g = m.g(x).flatten(2)  # (B, C', N)
    out = torch.empty(b, m.inter_channels, h, w, dtype=x.dtype)
    for n in range(b):
        logits = theta[n].T @ theta[n]  # (N, N)
        e = torch.exp(logits - logits.max(dim=1, keepdim=True).values)
        y = (e / e.sum(dim=1, keepdim=True)) @ g[n].T  # (N, C')
        out[n] = y.T.reshape(-1, h, w)
    return x + m.bn(m.w_z(out))


@pytest.mark.parametrize("k", [1, 3, 5])
def test_matches_region_loop(k: int):
    m = randomise(RegionNonLocal(6, inter_channels=3, kernel_size=k), scale=0.3).eval()
    x = rand(2, 6, 4, 5)
    with torch.no_grad():
        torch.testing.assert_close(m(x), _reference(m, x))


def test_identity_at_init_and_gradients():
    torch.manual_seed(0)
    x = rand(2, 8, 5, 6)
    assert_identity_at_init(RegionNonLocal(8).double(), x)
    assert_all_parameters_get_gradients(randomise(RegionNonLocal(8), scale=0.3), x)
    with pytest.raises(ValueError):
        RegionNonLocal(8, kernel_size=2)
