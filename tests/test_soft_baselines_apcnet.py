"""APCNet's adaptive context module (``soft_baselines.apcnet``) against its equations."""

from __future__ import annotations

import pytest
import torch

from soft_baselines import create
from soft_baselines.apcnet import AdaptiveContextModule
from tests.helpers.soft import (
    assert_all_parameters_get_gradients,
    assert_identity_at_init,
    conv1x1,
    rand,
    randomise,
)


def _acm_reference(m: AdaptiveContextModule, x: torch.Tensor) -> torch.Tensor:
    """x_r + sum_k sigmoid(conv(x_r,i + GAP(x_r)))_k * conv(pool_s(x_r))_k, per position."""
    xr = m.reduce(x)
    b, _c, h, w = xr.shape
    s = m.scale
    out = xr.clone()
    for n in range(b):
        g = xr[n].mean(dim=(1, 2))
        regions = []
        for r in range(s):
            for q in range(s):
                r0, r1 = (r * h) // s, -((-(r + 1) * h) // s)
                c0, c1 = (q * w) // s, -((-(q + 1) * w) // s)
                regions.append(conv1x1(m.region, xr[n, :, r0:r1, c0:c1].mean(dim=(1, 2))))
        for i in range(h):
            for j in range(w):
                a = torch.sigmoid(conv1x1(m.affinity, xr[n, :, i, j] + g))
                out[n, :, i, j] += sum(a[k] * regions[k] for k in range(s * s))
    return out


@pytest.mark.parametrize("scale", [1, 2, 3])
def test_acm_matches_equations(scale: int):
    m = randomise(AdaptiveContextModule(5, 3, scale)).eval()
    x = rand(2, 5, 5, 4)
    with torch.no_grad():
        torch.testing.assert_close(m(x), _acm_reference(m, x))


def test_block_fuses_input_and_every_scale():
    m = randomise(create("apc", 8, scales=(1, 2))).eval()
    x = rand(2, 8, 4, 5)
    with torch.no_grad():
        parts = [x, _acm_reference(m.acms[0], x), _acm_reference(m.acms[1], x)]
        torch.testing.assert_close(m(x), x + m.fuse(torch.cat(parts, dim=1)))


def test_identity_at_init_and_gradients():
    torch.manual_seed(0)
    x = rand(2, 8, 6, 7)
    assert_identity_at_init(create("apc", 8).double(), x)
    assert_all_parameters_get_gradients(randomise(create("apc", 8), scale=0.3), x)
