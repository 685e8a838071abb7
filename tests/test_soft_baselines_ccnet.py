"""``soft_baselines.ccnet``: criss-cross attention (Huang et al. 2019) against a masked
full reference.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from soft_baselines.ccnet import CrissCrossAttention
from tests.helpers.soft import DT, _conv1x1, _explicit_softmax, _perturb, _x

# --------------------------------------------------------------------------- CCNet


def _cc_reference(m: CrissCrossAttention, x: Tensor) -> Tensor:
    """Full N × N attention masked to each position's row and column (self counted once)."""
    b, c, h, w = x.shape
    rows = torch.arange(h).repeat_interleave(w)
    cols = torch.arange(w).repeat(h)
    allowed = (rows[:, None] == rows[None, :]) | (cols[:, None] == cols[None, :])
    assert allowed.sum(1).eq(h + w - 1).all()
    for _ in range(m.recurrence):
        f = x.reshape(b, c, h * w)
        q, k, v = _conv1x1(m.query, f), _conv1x1(m.key, f), _conv1x1(m.value, f)
        energy = torch.einsum("bcu,bcv->buv", q, k).masked_fill(~allowed, float("-inf"))
        att = _explicit_softmax(energy, dim=2)  # (B, N, N)
        out = torch.einsum("buv,bcv->bcu", att, v)
        x = x + m.gamma * out.reshape(b, c, h, w)
    return x


@pytest.mark.parametrize("recurrence", [1, 2, 3])
@pytest.mark.parametrize("hw", [(5, 7), (4, 4), (1, 6), (6, 1)])
def test_cc_matches_masked_full_reference(recurrence: int, hw: tuple[int, int]):
    torch.manual_seed(0)
    m = CrissCrossAttention(16, recurrence=recurrence)
    m = _perturb(m).double()
    with torch.no_grad():
        m.gamma.fill_(0.7)
    x = _x(2, 16, *hw)
    torch.testing.assert_close(m(x), _cc_reference(m, x))


def test_cc_attention_counts_self_once():
    torch.manual_seed(0)
    m = _perturb(CrissCrossAttention(8)).double()
    a_col, a_row = m.attention(_x(2, 8, 5, 6))
    assert a_col.shape == (2, 5, 6, 5) and a_row.shape == (2, 5, 6, 6)
    assert torch.diagonal(a_col, dim1=1, dim2=3).abs().max() == 0  # a_col[b, h, w, h] == 0
    torch.testing.assert_close(a_col.sum(-1) + a_row.sum(-1), torch.ones(2, 5, 6, dtype=DT))


def test_cc_fast_path_avoids_n_by_n():
    """256 × 256 map: an N × N attention (N = 65536, ≈ 4.3e9 entries) would not fit here."""
    torch.manual_seed(0)
    m = _perturb(CrissCrossAttention(8, recurrence=1)).eval()
    x = torch.randn(1, 8, 256, 256)
    with torch.no_grad():
        y = m(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
