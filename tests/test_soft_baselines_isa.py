"""Per-module tests for A²-Net, CGNL, CCNet, EMANet, ISA and DANet (PAM/CAM).

Each module with a fast path is checked against a slow reference written here from the
paper's definition (explicit softmaxes, explicit N × N affinities), in float64.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from soft_baselines import create
from soft_baselines.a2net import DoubleAttention
from soft_baselines.ccnet import CrissCrossAttention
from soft_baselines.cgnl import CompactGeneralizedNonLocal
from soft_baselines.danet import ChannelAttention, DualAttention, PositionAttention
from soft_baselines.emanet import EMAttentionUnit
from soft_baselines.isa import (
    EmbeddedGaussianAttention,
    InterlacedSparseSelfAttention,
    long_range_group,
    long_range_ungroup,
    short_range_group,
    short_range_ungroup,
)

DT = torch.float64
FAMILY_B = ("a2", "cgnl", "cc", "ema", "isa", "danet", "pam", "cam")
# ISA's default block (8 × 8) on a map no larger than 8 × 8 leaves one position per
# long-range group, where attention is trivially 1 and the query/key get no gradient.
SMALL_MAP_KWARGS = {"isa": {"block_size": (2, 3)}}


def _perturb(module: nn.Module, seed: int = 1, scale: float = 0.3) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return module


def _x(b: int, c: int, h: int, w: int, seed: int = 0) -> Tensor:
    return torch.randn(b, c, h, w, generator=torch.Generator().manual_seed(seed), dtype=DT)


def _explicit_softmax(e: Tensor, dim: int) -> Tensor:
    ex = torch.exp(e - e.amax(dim=dim, keepdim=True))
    return ex / ex.sum(dim=dim, keepdim=True)


def _conv1x1(conv: nn.Conv2d, x: Tensor) -> Tensor:
    """A 1×1 convolution applied as an explicit matrix product: (B, C, N) -> (B, C', N)."""
    w = conv.weight.reshape(conv.out_channels, -1)
    y = torch.einsum("oc,bcn->bon", w, x)
    return y if conv.bias is None else y + conv.bias[None, :, None]


# --------------------------------------------------------------------------- common


@pytest.mark.parametrize("name", FAMILY_B)
def test_every_parameter_gets_a_gradient(name: str):
    torch.manual_seed(0)
    m = _perturb(create(name, 16, **SMALL_MAP_KWARGS.get(name, {}))).double().train()
    x = _x(2, 16, 5, 6).requires_grad_()
    m(x).square().sum().backward()
    for pname, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("name", FAMILY_B)
def test_tiny_and_degenerate_sizes(name: str):
    torch.manual_seed(0)
    m = _perturb(create(name, 4)).double().train()
    for h, w in [(1, 1), (1, 5), (6, 1), (3, 2)]:
        x = _x(2, 4, h, w)
        y = m(x)
        assert y.shape == x.shape and torch.isfinite(y).all()


@pytest.mark.parametrize("name", FAMILY_B)
def test_channels_one(name: str):
    torch.manual_seed(0)
    m = _perturb(create(name, 1)).double()
    x = _x(2, 1, 3, 4)
    assert m(x).shape == x.shape


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("a2", {"mid_channels": 0}),
        ("a2", {"num_descriptors": -2}),
        ("a2", {"mid_channels": 2.5}),
        ("cgnl", {"planes": 0}),
        ("cgnl", {"groups": 3}),
        ("cgnl", {"groups": 0}),
        ("cgnl", {"kernel": "poly"}),
        ("cgnl", {"order": -1}),
        ("cgnl", {"order": 1.5}),
        ("cgnl", {"gamma": 0.0}),
        ("cgnl", {"gamma": float("nan")}),
        ("cgnl", {"gamma": float("inf")}),
        ("cc", {"reduction": 0}),
        ("cc", {"recurrence": 0}),
        ("cc", {"recurrence": True}),
        ("ema", {"num_bases": 0}),
        ("ema", {"iters": 0}),
        ("ema", {"eval_iters": 0}),
        ("ema", {"lam": 0.0}),
        ("ema", {"lam": -1.0}),
        ("ema", {"momentum": 1.5}),
        ("ema", {"momentum": -0.1}),
        ("isa", {"block_size": 0}),
        ("isa", {"block_size": (2,)}),
        ("isa", {"block_size": (2, 0)}),
        ("isa", {"key_channels": 0}),
        ("isa", {"value_channels": -1}),
        ("pam", {"reduction": 0}),
        ("danet", {"reduction": -8}),
    ],
)
def test_bad_hyperparameters_raise(name: str, kwargs: dict):
    with pytest.raises(ValueError):
        create(name, 16, **kwargs)


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


# --------------------------------------------------------------------------- EMANet


def _em_reference(m: EMAttentionUnit, x: Tensor, iters: int, bases: Tensor):
    """Per-sample EM with explicit loops; returns (block output, final bases (B, K, C))."""
    b, c, h, w = x.shape
    feats = _conv1x1(m.conv_in, x.reshape(b, c, h * w))  # (B, C, N)
    recons, mus = [], []
    for i in range(b):
        xi = feats[i].t()  # (N, C)
        mu = bases.clone()  # (K, C)
        for _ in range(iters):
            z = _explicit_softmax(m.lam * xi @ mu.t(), dim=1)  # (N, K)
            mu = torch.stack(
                [(z[:, k : k + 1] * xi).sum(0) / (1e-6 + z[:, k].sum()) for k in range(len(mu))]
            )
            mu = mu / mu.norm(dim=1, keepdim=True).clamp_min(1e-12)
        recons.append((z @ mu).t())  # (C, N)
        mus.append(mu)
    recon = torch.stack(recons).reshape(b, c, h, w)
    return x + m.norm(m.conv_out(torch.relu(recon))), torch.stack(mus)


def _ema(**kwargs) -> EMAttentionUnit:
    torch.manual_seed(0)
    return _perturb(EMAttentionUnit(8, num_bases=5, **kwargs)).double()


def test_ema_eval_matches_reference_and_keeps_bases():
    m = _ema(iters=2, eval_iters=4).eval()
    x = _x(2, 8, 3, 5)
    before = m.bases.clone()
    expected, _ = _em_reference(m, x, iters=4, bases=before)
    torch.testing.assert_close(m(x), expected)
    assert torch.equal(m.bases, before)


def test_ema_train_moving_average_update():
    m = _ema(iters=3, momentum=0.9).train()
    x = _x(2, 8, 3, 5)
    before = m.bases.clone()
    expected_out, mus = _em_reference(m, x, iters=3, bases=before)
    y = m(x)
    torch.testing.assert_close(y, expected_out)
    new = 0.9 * before + 0.1 * mus.mean(0)
    torch.testing.assert_close(m.bases, new / new.norm(dim=1, keepdim=True))
    torch.testing.assert_close(m.bases.norm(dim=1), torch.ones(5, dtype=DT))
    assert not m.bases.requires_grad and m.bases.grad_fn is None
    assert "bases" in m.state_dict() and "bases" not in dict(m.named_parameters())


def test_ema_updates_carry_no_autograd_history():
    m = _ema().train()
    for seed in range(3):  # repeated forward/backward: the in-place update must not break it
        x = _x(2, 8, 4, 4, seed=seed).requires_grad_()
        m(x).sum().backward()
        assert m.bases.grad_fn is None and not m.bases.requires_grad
    assert m.conv_in.weight.grad.abs().sum() > 0


def test_ema_momentum_one_freezes_bases_and_init_is_unit_norm():
    m = _ema(momentum=1.0).train()
    torch.testing.assert_close(m.bases.norm(dim=1), torch.ones(5, dtype=DT))
    before = m.bases.clone()
    m(_x(2, 8, 3, 3))
    torch.testing.assert_close(m.bases, before)
    assert EMAttentionUnit(16).bases.shape == (64, 16)


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


# --------------------------------------------------------------------------- DANet


def _pam_reference(m: PositionAttention, x: Tensor) -> Tensor:
    b, c, h, w = x.shape
    f = x.reshape(b, c, h * w)
    q, k, v = _conv1x1(m.query, f), _conv1x1(m.key, f), _conv1x1(m.value, f)
    n = h * w
    out = torch.zeros_like(f)
    for i in range(n):
        s_i = torch.exp((q[:, :, i : i + 1] * k).sum(1))  # (B, N): exp(B_iᵀ C_j)
        s_i = s_i / s_i.sum(1, keepdim=True)
        out[:, :, i] = (v * s_i[:, None, :]).sum(-1)
    return x + m.alpha * out.reshape(b, c, h, w)


def _cam_reference(m: ChannelAttention, x: Tensor) -> Tensor:
    b, c, h, w = x.shape
    f = x.reshape(b, c, h * w)
    energy = f @ f.transpose(1, 2)
    # softmax(max − energy) == softmax(−energy): a softmax is shift-invariant per row.
    att = _explicit_softmax(-energy, dim=2)
    return x + m.beta * (att @ f).reshape(b, c, h, w)


def test_pam_matches_naive_reference():
    torch.manual_seed(0)
    m = _perturb(PositionAttention(16)).double()
    x = _x(2, 16, 3, 4)
    torch.testing.assert_close(m(x), _pam_reference(m, x))


def test_cam_matches_naive_reference():
    m = _perturb(ChannelAttention(6)).double()
    x = 0.3 * _x(2, 6, 3, 4)
    torch.testing.assert_close(m(x), _cam_reference(m, x))


def test_cam_stays_finite_for_large_energies():
    m = _perturb(ChannelAttention(4))
    x = 1e3 * torch.randn(2, 4, 8, 8)
    assert torch.isfinite(m(x)).all()
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        assert torch.isfinite(m(x).float()).all()


def test_danet_is_sum_of_pam_and_cam():
    torch.manual_seed(0)
    m = _perturb(DualAttention(16)).double()
    x = _x(2, 16, 3, 5)
    torch.testing.assert_close(m(x), m.pam(x) + m.cam(x) - x)
    torch.testing.assert_close(m(x), _pam_reference(m.pam, x) + _cam_reference(m.cam, x) - x)


def test_scales_start_at_zero():
    assert CrissCrossAttention(8).gamma.item() == 0
    assert PositionAttention(8).alpha.item() == 0
    assert ChannelAttention(8).beta.item() == 0
    for cls in (DoubleAttention, EMAttentionUnit, InterlacedSparseSelfAttention):
        assert cls(8).norm.weight.abs().sum() == 0
    assert CompactGeneralizedNonLocal(8).norm.weight.abs().sum() == 0


@pytest.mark.parametrize("name", FAMILY_B)
def test_rejects_empty_spatial_and_5d_input(name: str):
    m = create(name, 4)
    with pytest.raises(ValueError):
        m(torch.zeros(2, 4, 0, 3))
    with pytest.raises(ValueError):
        m(torch.zeros(2, 4, 3, 3, 1))
