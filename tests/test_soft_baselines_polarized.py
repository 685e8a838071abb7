"""Polarized self-attention (``soft_baselines.polarized``) against the paper's equations."""

from __future__ import annotations

import pytest
import torch

from soft_baselines.polarized import PolarizedSelfAttention
from tests.helpers.soft import assert_all_parameters_get_gradients, conv1x1, rand, randomise


def _softmax(v: torch.Tensor) -> torch.Tensor:
    e = torch.exp(v - v.max())
    return e / e.sum()


def _gates(m: PolarizedSelfAttention, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A_ch (C,) and A_sp (H, W) for one image ``x`` (C, H, W), position by position."""
    _c, h, w = x.shape
    pix = [(i, j) for i in range(h) for j in range(w)]
    wq = _softmax(torch.stack([conv1x1(m.ch_q, x[:, i, j])[0] for i, j in pix]))
    z = sum(wq[n] * conv1x1(m.ch_v, x[:, i, j]) for n, (i, j) in enumerate(pix))
    zc = conv1x1(m.ch_z, z)
    ln = (zc - zc.mean()) / torch.sqrt(zc.var(unbiased=False) + m.ch_norm.eps)
    a_ch = torch.sigmoid(ln * m.ch_norm.weight + m.ch_norm.bias)
    q = _softmax(sum(conv1x1(m.sp_q, x[:, i, j]) for i, j in pix) / len(pix))
    a_sp = torch.empty(h, w, dtype=x.dtype)
    for i, j in pix:
        a_sp[i, j] = torch.sigmoid(q @ conv1x1(m.sp_v, x[:, i, j]))
    return a_ch, a_sp


@pytest.mark.parametrize("layout", ["parallel", "sequential"])
def test_matches_paper_equations(layout: str):
    m = randomise(PolarizedSelfAttention(6, layout=layout, inter_channels=3))
    x = rand(2, 6, 3, 4)
    with torch.no_grad():
        out = m(x)
        for b in range(2):
            a_ch, a_sp = _gates(m, x[b])
            if layout == "parallel":
                expected = x[b] * a_ch[:, None, None] + x[b] * a_sp[None]
            else:
                y = x[b] * a_ch[:, None, None]
                expected = y * _gates(m, y)[1][None]
            torch.testing.assert_close(out[b], expected)


def test_gates_shapes_and_gradients():
    m = randomise(PolarizedSelfAttention(8))
    x = rand(2, 8, 3, 5)
    assert m.channel_gate(x).shape == (2, 8, 1, 1)
    assert m.spatial_gate(x).shape == (2, 1, 3, 5)
    for layout in ("parallel", "sequential"):
        assert_all_parameters_get_gradients(randomise(PolarizedSelfAttention(8, layout)), x)


def test_bad_layout():
    with pytest.raises(ValueError):
        PolarizedSelfAttention(8, layout="both")
