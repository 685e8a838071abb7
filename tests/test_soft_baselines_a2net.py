"""``soft_baselines.a2net``: the double attention block (A²-Net, Chen et al. 2018)
against an explicit reference.
"""

from __future__ import annotations

import torch
from torch import Tensor

from soft_baselines.a2net import DoubleAttention
from tests.helpers.soft import _conv1x1, _explicit_softmax, _perturb, _x

# --------------------------------------------------------------------------- A²-Net


def _a2_reference(m: DoubleAttention, x: Tensor) -> Tensor:
    b, c, h, w = x.shape
    f = x.reshape(b, c, h * w)
    a = _conv1x1(m.features, f)  # (B, m, N)
    bmaps = _explicit_softmax(_conv1x1(m.gather_maps, f), dim=2)  # over positions
    vvecs = _explicit_softmax(_conv1x1(m.distribute_maps, f), dim=1)  # over descriptors
    z = torch.zeros(b, m.mid_channels, h * w, dtype=x.dtype)
    for i in range(m.num_descriptors):
        g_i = (a * bmaps[:, i : i + 1, :]).sum(-1)  # descriptor i: (B, m)
        z += g_i[:, :, None] * vvecs[:, i : i + 1, :]
    return x + m.norm(m.proj(z.reshape(b, -1, h, w)))


def test_a2_matches_explicit_reference():
    torch.manual_seed(0)
    m = _perturb(DoubleAttention(12, mid_channels=5, num_descriptors=3)).double().eval()
    x = _x(2, 12, 4, 7)
    torch.testing.assert_close(m(x), _a2_reference(m, x))


def test_a2_defaults():
    m = DoubleAttention(16)
    assert (m.mid_channels, m.num_descriptors) == (4, 4)
    assert DoubleAttention(3).mid_channels == 1
