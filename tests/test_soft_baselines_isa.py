"""``soft_baselines.isa``: interlaced sparse self-attention (Huang et al. 2019).

Permutations, grouping, and the fast path against a masked reference written here from
the paper's definition (explicit softmaxes), in float64, padding included.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from soft_baselines.isa import (
    EmbeddedGaussianAttention,
    InterlacedSparseSelfAttention,
    long_range_group,
    long_range_ungroup,
    short_range_group,
    short_range_ungroup,
)
from tests.helpers.soft import _conv1x1, _explicit_softmax, _perturb, _x

# --------------------------------------------------------------------------- ISA


@settings(max_examples=40, deadline=None)
@given(
    qh=st.integers(1, 4),
    qw=st.integers(1, 4),
    ph=st.integers(1, 4),
    pw=st.integers(1, 4),
    b=st.integers(1, 2),
)
def test_isa_permutations_round_trip_exactly(qh: int, qw: int, ph: int, pw: int, b: int):
    x = torch.randn(b, 3, qh * ph, qw * pw)
    long = long_range_group(x, ph, pw)
    assert long.shape == (b * ph * pw, 3, qh, qw)
    assert torch.equal(long_range_ungroup(long, ph, pw), x)
    short = short_range_group(x, ph, pw)
    assert short.shape == (b * qh * qw, 3, ph, pw)
    assert torch.equal(short_range_ungroup(short, qh, qw), x)
    # Long-range group (p_h, p_w) = positions spaced P_h rows and P_w columns apart.
    i, r, s = b - 1, ph - 1, pw - 1
    assert torch.equal(long[(i * ph + r) * pw + s], x[i, :, r::ph, s::pw])
    # Short-range group (q_h, q_w) = one contiguous P_h × P_w block.
    j, u, v = b - 1, qh - 1, qw - 1
    block = x[j, :, u * ph : (u + 1) * ph, v * pw : (v + 1) * pw]
    assert torch.equal(short[(j * qh + u) * qw + v], block)


def test_isa_group_functions_reject_indivisible_sizes():
    with pytest.raises(ValueError):
        long_range_group(torch.zeros(1, 2, 5, 4), 2, 2)
    with pytest.raises(ValueError):
        short_range_group(torch.zeros(1, 2, 4, 5), 2, 2)


class _IdentityAttention(nn.Module):
    def forward(self, x: Tensor, key_mask: Tensor | None = None) -> Tensor:
        return x


@pytest.mark.parametrize("hw", [(8, 12), (7, 10), (1, 3), (9, 4)])
def test_isa_with_identity_attention_is_identity(hw: tuple[int, int]):
    m = InterlacedSparseSelfAttention(4, block_size=(4, 3))
    m.long_attn = _IdentityAttention()
    m.short_attn = _IdentityAttention()
    x = torch.randn(2, 4, *hw)
    assert torch.equal(m.interlaced(x), x)


def _masked_attention(sa: EmbeddedGaussianAttention, f: Tensor, allowed: Tensor) -> Tensor:
    """Self-attention over (B, C, N) features with an explicit N × N mask."""
    q, k, v = _conv1x1(sa.query, f), _conv1x1(sa.key, f), _conv1x1(sa.value, f)
    energy = torch.einsum("bcu,bcv->buv", q, k) * sa.scale
    att = _explicit_softmax(energy.masked_fill(~allowed, float("-inf")), dim=2)
    return _conv1x1(sa.out, torch.einsum("buv,bcv->bcu", att, v))


def _isa_reference(m: InterlacedSparseSelfAttention, x: Tensor) -> Tensor:
    """ISA on the real (unpadded) grid with explicit long-/short-range N × N masks."""
    b, c, h, w = x.shape
    ph, pw = m.block_size
    rows = torch.arange(h).repeat_interleave(w)
    cols = torch.arange(w).repeat(h)
    same_long = (rows[:, None] % ph == rows[None, :] % ph) & (
        cols[:, None] % pw == cols[None, :] % pw
    )
    same_short = (rows[:, None] // ph == rows[None, :] // ph) & (
        cols[:, None] // pw == cols[None, :] // pw
    )
    f = x.reshape(b, c, h * w)
    f = _masked_attention(m.long_attn, f, same_long)
    f = _masked_attention(m.short_attn, f, same_short)
    return x + m.norm(f.reshape(b, c, h, w))


@pytest.mark.parametrize(
    ("hw", "block"), [((6, 8), (3, 2)), ((7, 10), (3, 4)), ((5, 5), 2), ((2, 9), (4, 4))]
)
def test_isa_matches_masked_reference_including_padding(hw, block):
    torch.manual_seed(0)
    m = _perturb(InterlacedSparseSelfAttention(8, block_size=block)).double().eval()
    x = _x(2, 8, *hw)
    torch.testing.assert_close(m(x), _isa_reference(m, x))


def test_isa_padded_input_in_train_mode_and_fully_padded_groups():
    # 3 × 5 with block 4: long-range groups with p_h = 3 or p_w = 4 contain only padding.
    torch.manual_seed(0)
    m = _perturb(InterlacedSparseSelfAttention(8, block_size=4)).train()
    x = torch.randn(2, 8, 3, 5, requires_grad=True)
    y = m(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    y.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_isa_block_size_forms():
    assert InterlacedSparseSelfAttention(8).block_size == (8, 8)
    assert InterlacedSparseSelfAttention(8, block_size=(2, 5)).block_size == (2, 5)
