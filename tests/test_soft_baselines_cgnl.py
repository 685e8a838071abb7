"""``soft_baselines.cgnl``: compact generalized non-local (Yue et al. 2018) against the
full affinity.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from soft_baselines.cgnl import CompactGeneralizedNonLocal
from tests.helpers.soft import _perturb, _x

# --------------------------------------------------------------------------- CGNL


def _cgnl_reference(m: CompactGeneralizedNonLocal, x: Tensor, exact_gaussian: bool = False):
    """Forms the full (C'/G·H·W) × (C'/G·H·W) generalized affinity per group explicitly."""
    b, _, h, w = x.shape
    t, p, g = (conv(x).reshape(b, m.groups, -1) for conv in (m.theta, m.phi, m.g))
    n = t.shape[-1]
    ti, pj = t[..., :, None], p[..., None, :]  # (B, G, N, 1), (B, G, 1, N)
    if m.kernel == "dot":
        aff = ti * pj
    elif exact_gaussian:
        aff = torch.exp(-m.gamma * (ti - pj) ** 2)
    else:
        taylor = sum(
            (2 * m.gamma) ** k / math.factorial(k) * ti**k * pj**k for k in range(m.order + 1)
        )
        aff = torch.exp(-m.gamma * ti**2) * torch.exp(-m.gamma * pj**2) * taylor
    assert aff.shape == (b, m.groups, n, n)
    y = torch.einsum("bgij,bgj->bgi", aff, g)
    if m.scale:
        y = y / math.sqrt(n)
    return x + m.norm(m.proj(y.reshape(b, m.planes, h, w)))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"kernel": "dot"},
        {"kernel": "dot", "scale": False, "groups": 1},
        {"kernel": "gaussian", "gamma": 0.3},
        {"kernel": "gaussian", "gamma": 0.2, "order": 0},
        {"kernel": "gaussian", "gamma": 0.5, "order": 5, "groups": 2, "scale": False},
    ],
)
def test_cgnl_matches_full_affinity_reference(kwargs: dict):
    torch.manual_seed(0)
    m = _perturb(CompactGeneralizedNonLocal(8, planes=4, **kwargs)).double().train()
    x = _x(2, 8, 3, 5)
    torch.testing.assert_close(m(x), _cgnl_reference(m, x))


def test_cgnl_taylor_converges_to_gaussian_kernel():
    torch.manual_seed(0)
    m = CompactGeneralizedNonLocal(8, planes=4, kernel="gaussian", gamma=0.2, order=14)
    m = _perturb(m).double()
    x = 0.5 * _x(2, 8, 3, 4)
    torch.testing.assert_close(m(x), _cgnl_reference(m, x, exact_gaussian=True))
    low = CompactGeneralizedNonLocal(8, planes=4, kernel="gaussian", gamma=0.2, order=1)
    low.load_state_dict(m.state_dict())
    low.double()
    assert not torch.allclose(low(x), _cgnl_reference(m, x, exact_gaussian=True))


@pytest.mark.parametrize("kernel", ["dot", "gaussian"])
def test_cgnl_fast_path_is_linear_in_positions(kernel: str):
    """N = 2·512·512 elements per group: an N × N affinity (≈ 2.7e11 entries) would not fit."""
    torch.manual_seed(0)
    m = _perturb(CompactGeneralizedNonLocal(4, planes=2, groups=1, kernel=kernel)).eval()
    x = torch.randn(1, 4, 512, 512)
    with torch.no_grad():
        y = m(x)
    assert y.shape == x.shape and torch.isfinite(y).all()


def test_cgnl_groups_default_and_coefficients():
    assert CompactGeneralizedNonLocal(16).groups == 8
    assert CompactGeneralizedNonLocal(12).groups == 2  # planes 6: gcd(8, 6, 12)
    assert CompactGeneralizedNonLocal(5).groups == 1
    m = CompactGeneralizedNonLocal(16, kernel="gaussian", gamma=0.25, order=3)
    assert m.taylor_coefficients() == pytest.approx([1.0, 0.5, 0.125, 0.125 / 6])
