"""Tests for the first soft-attention family: STN, SE, SK, CBAM/BAM, non-local, GCNet.

Module-specific checks (reference implementations, identity at init, STN geometry); the
registry-wide contract tests live elsewhere.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

import soft_baselines
from soft_baselines.cbam import BAM, CBAM
from soft_baselines.gcnet import GlobalContextBlock
from soft_baselines.nonlocal_block import PAIRWISE_FUNCTIONS, NonLocalBlock
from soft_baselines.se import SqueezeExcitation, bottleneck_width
from soft_baselines.sk import SKBlock, SKConv
from soft_baselines.stn import SpatialTransformer, theta_from_params, warp

C = 12  # channels used throughout: below SK's default 32 groups, not a power of two

# (registered name, kwargs): every block of this family and each variant worth covering.
BLOCKS: list[tuple[str, dict]] = [
    ("se", {}),
    ("cbam", {}),
    ("cbam", {"spatial": False}),
    ("bam", {}),
    ("sk", {}),
    ("sk", {"branches": 3}),
    *[("nonlocal", {"pairwise": p}) for p in PAIRWISE_FUNCTIONS],
    ("nonlocal", {"pairwise": "embedded_gaussian", "sub_sample": True}),
    ("nonlocal", {"pairwise": "concatenation", "sub_sample": True}),
    ("gc", {}),
    ("gc", {"fusion": "mul"}),
    ("gc", {"pooling": "avg"}),
]
BLOCK_IDS = [f"{n}-{'-'.join(f'{k}={v}' for k, v in kw.items()) or 'default'}" for n, kw in BLOCKS]

# Blocks whose contract is "exactly the identity at init".
IDENTITY_AT_INIT: list[tuple[str, dict]] = [
    ("sk", {}),
    *[("nonlocal", {"pairwise": p}) for p in PAIRWISE_FUNCTIONS],
    *[("nonlocal", {"pairwise": p, "sub_sample": True}) for p in PAIRWISE_FUNCTIONS],
    ("gc", {}),
    ("gc", {"pooling": "avg"}),
]


def randomise(module: nn.Module, seed: int = 0, scale: float = 0.5) -> nn.Module:
    """Overwrite every parameter (zero-init ones included) and BN running stats at random."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * scale)
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return module


def build(name: str, kwargs: dict, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return soft_baselines.create(name, C, **kwargs)


def rand(*shape: int, seed: int = 1, dtype: torch.dtype = torch.float32) -> Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def conv1x1(conv: nn.Conv2d, v: Tensor) -> Tensor:
    """A 1x1 convolution applied to one feature vector ``v`` (C_in,) -> (C_out,)."""
    return conv.weight[:, :, 0, 0] @ v + conv.bias


# --------------------------------------------------------------------------- generic


@pytest.mark.parametrize(("name", "kwargs"), BLOCKS, ids=BLOCK_IDS)
def test_shape_preserved_non_square(name: str, kwargs: dict) -> None:
    m = build(name, kwargs)
    for shape in [(2, C, 5, 7), (2, C, 8, 3)]:
        y = m(rand(*shape))
        assert y.shape == shape
        assert torch.isfinite(y).all()


@settings(max_examples=15, deadline=None)
@given(
    idx=st.integers(0, len(BLOCKS) - 1),
    h=st.integers(1, 6),
    w=st.integers(1, 6),
    training=st.booleans(),
)
def test_shape_preserved_any_small_size(idx: int, h: int, w: int, training: bool) -> None:
    name, kwargs = BLOCKS[idx]
    m = build(name, kwargs).train(training)
    assert m(rand(2, C, h, w)).shape == (2, C, h, w)


@pytest.mark.parametrize(("name", "kwargs"), BLOCKS, ids=BLOCK_IDS)
def test_gradients_reach_input_and_all_parameters(name: str, kwargs: dict) -> None:
    m = randomise(build(name, kwargs))
    x = rand(2, C, 5, 6).requires_grad_()
    (m(x) * rand(2, C, 5, 6, seed=7)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for pname, p in m.named_parameters():
        assert p.grad is not None, f"{pname} got no gradient"
        assert torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, f"{pname} got an all-zero gradient"


@pytest.mark.parametrize(("name", "kwargs"), BLOCKS, ids=BLOCK_IDS)
def test_gradients_are_not_none_at_init(name: str, kwargs: dict) -> None:
    m = build(name, kwargs)
    x = rand(2, C, 4, 5).requires_grad_()
    m(x).square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is not None for p in m.parameters())


@pytest.mark.parametrize(("name", "kwargs"), BLOCKS, ids=BLOCK_IDS)
def test_deterministic(name: str, kwargs: dict) -> None:
    x = rand(2, C, 5, 7)
    a = randomise(build(name, kwargs, seed=3), seed=4)
    b = randomise(build(name, kwargs, seed=3), seed=4)
    torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)
    a.eval()
    torch.testing.assert_close(a(x), a(x), rtol=0, atol=0)


@pytest.mark.parametrize(("name", "kwargs"), BLOCKS, ids=BLOCK_IDS)
def test_float64(name: str, kwargs: dict) -> None:
    m = randomise(build(name, kwargs)).double()
    y = m(rand(2, C, 4, 6, dtype=torch.float64))
    assert y.dtype == torch.float64 and torch.isfinite(y).all()


@pytest.mark.parametrize(("name", "kwargs"), BLOCKS, ids=BLOCK_IDS)
def test_cpu_autocast_bfloat16(name: str, kwargs: dict) -> None:
    m = build(name, kwargs)
    x = rand(2, C, 5, 7)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = m(x)
    assert y.shape == x.shape and torch.isfinite(y).all()


@pytest.mark.parametrize(("name", "kwargs"), BLOCKS, ids=BLOCK_IDS)
def test_wrong_input_shape_raises(name: str, kwargs: dict) -> None:
    m = build(name, kwargs)
    with pytest.raises(ValueError, match=rf"\(B, {C}, H, W\)"):
        m(rand(2, C + 1, 4, 4))
    with pytest.raises(ValueError, match=r"\(B, "):
        m(rand(C, 4, 4))


@pytest.mark.parametrize(("name", "kwargs"), IDENTITY_AT_INIT)
@pytest.mark.parametrize("training", [True, False])
def test_identity_at_init(name: str, kwargs: dict, training: bool) -> None:
    m = build(name, kwargs).train(training)
    x = rand(2, C, 5, 7)
    assert torch.equal(m(x), x)


@pytest.mark.parametrize(
    ("name", "kwargs", "match"),
    [
        ("se", {"reduction": 0}, "reduction"),
        ("se", {"min_hidden": -1}, "min_hidden"),
        ("cbam", {"kernel_size": 4}, "kernel_size"),
        ("cbam", {"reduction": 1.5}, "reduction"),
        ("bam", {"dilation": 0}, "dilation"),
        ("sk", {"branches": 0}, "branches"),
        ("sk", {"groups": 0}, "groups"),
        ("sk", {"min_dim": 0}, "min_dim"),
        ("nonlocal", {"pairwise": "softmax"}, "pairwise"),
        ("nonlocal", {"inter_channels": 0}, "inter_channels"),
        ("gc", {"ratio": 0.0}, "ratio"),
        ("gc", {"fusion": "concat"}, "fusion"),
        ("gc", {"pooling": "max"}, "pooling"),
        ("gc", {"min_hidden": 0}, "min_hidden"),
    ],
)
def test_bad_constructor_args_raise(name: str, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        soft_baselines.create(name, C, **kwargs)


def test_registered_names_and_kinds() -> None:
    blocks = set(soft_baselines.list_modules("block"))
    assert {"se", "cbam", "bam", "sk", "nonlocal", "gc"} <= blocks
    assert "stn" in soft_baselines.list_modules("transform")
    assert "stn" not in blocks


# --------------------------------------------------------------------------- SE


def test_bottleneck_width() -> None:
    assert bottleneck_width(512, 16, 8) == 32
    assert bottleneck_width(64, 16, 8) == 8  # floored
    assert bottleneck_width(4, 16, 8) == 4  # never wider than the input
    assert bottleneck_width(64, 16, 1) == 4  # the paper's plain C // r
    assert bottleneck_width(8, 16, 1) == 1


def test_se_matches_reference() -> None:
    m = randomise(SqueezeExcitation(C, reduction=4)).double()
    x = rand(2, C, 5, 7, dtype=torch.float64)
    ref = torch.empty_like(x)
    for b in range(2):
        z = torch.stack([x[b, c].sum() / x[b, c].numel() for c in range(C)])
        hidden = torch.clamp(m.fc1.weight @ z + m.fc1.bias, min=0)
        s = 1 / (1 + torch.exp(-(m.fc2.weight @ hidden + m.fc2.bias)))
        for c in range(C):
            ref[b, c] = x[b, c] * s[c]
    torch.testing.assert_close(m(x), ref)


def test_se_gates_near_half_at_init() -> None:
    torch.manual_seed(0)
    s = SqueezeExcitation(64).gates(rand(4, 64, 6, 6))
    assert s.shape == (4, 64)
    assert ((s > 0.2) & (s < 0.8)).all()


# --------------------------------------------------------------------------- CBAM / BAM


def test_cbam_matches_reference() -> None:
    m = randomise(CBAM(C, reduction=4, kernel_size=3)).double()
    x = rand(2, C, 4, 5, dtype=torch.float64)
    w1, b1 = m.mlp[0].weight[:, :, 0, 0], m.mlp[0].bias
    w2, b2 = m.mlp[2].weight[:, :, 0, 0], m.mlp[2].bias
    k, kb = m.spatial_conv.weight[0], m.spatial_conv.bias[0]  # (2, 3, 3)

    def mlp(v: Tensor) -> Tensor:
        return w2 @ torch.clamp(w1 @ v + b1, min=0) + b2

    ref = torch.empty_like(x)
    for b in range(2):
        flat = x[b].reshape(C, -1)
        mc = torch.sigmoid(mlp(flat.mean(1)) + mlp(flat.max(1).values))
        f1 = x[b] * mc[:, None, None]
        desc = torch.stack([f1.mean(0), f1.max(0).values])  # (2, H, W)
        padded = F.pad(desc, (1, 1, 1, 1))
        ms = torch.empty(4, 5, dtype=x.dtype)
        for i in range(4):
            for j in range(5):
                ms[i, j] = torch.sigmoid((padded[:, i : i + 3, j : j + 3] * k).sum() + kb)
        ref[b] = f1 * ms
    torch.testing.assert_close(m(x), ref)


def test_cbam_channel_only_is_a_channel_gate() -> None:
    m = CBAM(C, spatial=False)
    x = rand(2, C, 4, 5).abs() + 0.1
    ratio = m(x) / x
    # One gate per (image, channel), constant over positions.
    torch.testing.assert_close(ratio, ratio[:, :, :1, :1].expand_as(ratio))
    with pytest.raises(ValueError, match="spatial=False"):
        m.spatial_attention(x)


def test_bam_residual_form() -> None:
    m = randomise(BAM(C, reduction=4, dilation=2)).double()
    x = rand(2, C, 5, 7, dtype=torch.float64)
    a = m.attention(x)
    assert ((a > 0) & (a < 1)).all()
    torch.testing.assert_close(m(x), x * (1 + a))
    # The channel term is constant over positions and the spatial term over channels:
    # logit(a) = Mc + Ms is an outer sum.
    logit = torch.log(a / (1 - a))
    outer = logit[:, :, :1, :1] + logit[:, :1, :, :] - logit[:, :1, :1, :1]
    torch.testing.assert_close(logit, outer)


# --------------------------------------------------------------------------- SK


@pytest.mark.parametrize(("channels", "groups"), [(12, 4), (3, 1), (64, 32), (48, 16)])
def test_sk_groups_use_gcd(channels: int, groups: int) -> None:
    conv = SKConv(channels)
    assert conv.groups == groups
    assert conv.branches[0][0].groups == groups
    assert conv.dim == max(channels // 16, 32)


def test_sk_branch_dilations_and_selection_weights() -> None:
    conv = randomise(SKConv(C, branches=3)).eval()
    assert [b[0].dilation for b in conv.branches] == [(1, 1), (2, 2), (3, 3)]
    u, a = conv.branch_weights(rand(2, C, 5, 7))
    assert u.shape == (2, 3, C, 5, 7) and a.shape == (2, 3, C)
    torch.testing.assert_close(a.sum(dim=1), torch.ones(2, C))


def test_sk_uniform_selection_is_branch_mean() -> None:
    conv = randomise(SKConv(C, branches=3)).eval()
    nn.init.zeros_(conv.select.weight)
    x = rand(2, C, 5, 7)
    u, a = conv.branch_weights(x)
    torch.testing.assert_close(a, torch.full_like(a, 1 / 3))
    torch.testing.assert_close(conv(x), u.mean(dim=1))


def test_sk_block_matches_composition() -> None:
    m = randomise(SKBlock(C)).eval()
    x = rand(2, C, 5, 7)
    torch.testing.assert_close(m(x), x + m.bn(m.conv(x)))


# --------------------------------------------------------------------------- non-local


def naive_nonlocal(m: NonLocalBlock, x: Tensor) -> Tensor:
    """The paper's equations position by position, with explicit loops (slow, tiny inputs)."""
    bsz, _, h, w = x.shape
    gaussian = m.pairwise == "gaussian"

    def q_emb(v: Tensor) -> Tensor:
        return v if gaussian else conv1x1(m.theta, v)

    def k_emb(v: Tensor) -> Tensor:
        return v if gaussian else conv1x1(m.phi, v)

    if m.sub_sample:  # keys and values max-pooled over 2x2 windows (clipped at the edges)
        kh, kw = (2 if h >= 2 else 1), (2 if w >= 2 else 1)
        windows = [
            [(r, c) for r in range(i, min(i + kh, h)) for c in range(j, min(j + kw, w))]
            for i in range(0, h, kh)
            for j in range(0, w, kw)
        ]
    else:
        windows = [[(r, c)] for r in range(h) for c in range(w)]
    out = torch.empty(bsz, m.inter_channels, h, w, dtype=x.dtype)
    for b in range(bsz):
        keys, values = [], []
        for win in windows:
            keys.append(torch.stack([k_emb(x[b, :, r, c]) for r, c in win]).amax(0))
            values.append(torch.stack([conv1x1(m.g, x[b, :, r, c]) for r, c in win]).amax(0))
        n = len(windows)
        for i in range(h):
            for j in range(w):
                qi = q_emb(x[b, :, i, j])
                if m.pairwise in ("gaussian", "embedded_gaussian"):
                    f = torch.stack([torch.exp(qi @ kj) for kj in keys])
                    norm = f.sum()
                elif m.pairwise == "dot_product":
                    f = torch.stack([qi @ kj for kj in keys])
                    norm = n
                else:
                    wf = m.concat_project.weight[0]
                    f = torch.stack([torch.relu(wf @ torch.cat([qi, kj])) for kj in keys])
                    norm = n
                out[b, :, i, j] = sum(f[t] * values[t] for t in range(n)) / norm
    return x + m.bn(m.w_z(out))


@pytest.mark.parametrize("pairwise", PAIRWISE_FUNCTIONS)
@pytest.mark.parametrize("sub_sample", [False, True])
def test_nonlocal_matches_naive_reference(pairwise: str, sub_sample: bool) -> None:
    torch.manual_seed(0)
    m = NonLocalBlock(6, pairwise=pairwise, inter_channels=3, sub_sample=sub_sample)
    m = randomise(m, scale=0.4).double().eval()
    x = rand(2, 6, 3, 5, dtype=torch.float64) * 0.7  # odd sizes: clipped pooling windows
    torch.testing.assert_close(m(x), naive_nonlocal(m, x))


@pytest.mark.parametrize("pairwise", PAIRWISE_FUNCTIONS)
def test_nonlocal_pairwise_weights(pairwise: str) -> None:
    m = randomise(NonLocalBlock(6, pairwise=pairwise, sub_sample=True)).double().eval()
    x = rand(2, 6, 4, 5, dtype=torch.float64)
    wts = m.pairwise_weights(x)
    assert wts.shape == (2, 20, 2 * 3)
    if pairwise in ("gaussian", "embedded_gaussian"):
        torch.testing.assert_close(wts.sum(-1), torch.ones(2, 20, dtype=torch.float64))
    # forward = x + BN(W_z (weights @ values)).
    _, _, v = m.embed(x)
    y = (wts @ v).transpose(1, 2).reshape(2, m.inter_channels, 4, 5)
    torch.testing.assert_close(m(x), x + m.bn(m.w_z(y)))


def test_nonlocal_default_inter_channels_and_params() -> None:
    assert NonLocalBlock(12).inter_channels == 6
    assert NonLocalBlock(1).inter_channels == 1
    gauss = NonLocalBlock(12, pairwise="gaussian")
    assert gauss.theta is None and gauss.phi is None
    assert NonLocalBlock(12, pairwise="concatenation").concat_project.weight.shape == (1, 12)


# --------------------------------------------------------------------------- GCNet


def test_gc_matches_reference() -> None:
    m = randomise(GlobalContextBlock(C, ratio=0.25)).double().eval()
    x = rand(2, C, 4, 5, dtype=torch.float64)
    ref = torch.empty_like(x)
    for b in range(2):
        positions = [x[b, :, i, j] for i in range(4) for j in range(5)]
        logits = torch.stack([conv1x1(m.context_conv, p)[0] for p in positions])
        alpha = torch.exp(logits) / torch.exp(logits).sum()
        ctx = sum(a * p for a, p in zip(alpha, positions, strict=True))
        t1 = conv1x1(m.transform[0], ctx)
        ln = m.transform[1]
        t1 = (t1 - t1.mean()) / torch.sqrt(t1.var(unbiased=False) + ln.eps)
        t1 = t1 * ln.weight.flatten() + ln.bias.flatten()
        delta = conv1x1(m.transform[3], torch.relu(t1))
        ref[b] = x[b] + delta[:, None, None]
    torch.testing.assert_close(m(x), ref)


def test_gc_attention_map_and_mul_fusion() -> None:
    x = rand(2, C, 4, 5)
    m = GlobalContextBlock(C)
    alpha = m.attention_map(x)
    assert alpha.shape == (2, 1, 4, 5)
    torch.testing.assert_close(alpha.sum(dim=(1, 2, 3)), torch.ones(2))
    avg = GlobalContextBlock(C, pooling="avg")
    torch.testing.assert_close(avg.context(x), x.mean(dim=(2, 3), keepdim=True))
    mul = GlobalContextBlock(C, fusion="mul")
    torch.testing.assert_close(mul(x), 0.5 * x)  # sigmoid(0) gate at init
    assert GlobalContextBlock(12).hidden == 8  # round(12 / 16) floored at min_hidden
    assert GlobalContextBlock(256).hidden == 16
    assert GlobalContextBlock(4).hidden == 4  # never wider than C ...
    assert GlobalContextBlock(1).hidden == 2  # ... except that LayerNorm needs 2 units


def test_gc_small_channels_keep_context_gradient() -> None:
    # Regression: a 1-unit LayerNorm outputs a constant, so the context got no gradient.
    for channels in (1, 3, 12):
        m = randomise(GlobalContextBlock(channels))
        (m(rand(2, channels, 4, 5)) * rand(2, channels, 4, 5, seed=2)).sum().backward()
        assert m.context_conv.weight.grad.abs().sum() > 0, channels


# --------------------------------------------------------------------------- STN


def stn_with_random_head(mode: str, seed: int = 0, **kw) -> SpatialTransformer:
    torch.manual_seed(seed)
    m = SpatialTransformer(2, input_size=(12, 20), mode=mode, **kw)
    with torch.no_grad():
        m.fc_theta.weight.normal_(0, 0.3)
    return m


@pytest.mark.parametrize("mode", ["affine", "attention"])
def test_stn_identity_at_init(mode: str) -> None:
    m = SpatialTransformer(2, input_size=(12, 20), mode=mode)
    x = rand(3, 2, 12, 20)
    warped, theta = m.transform(x)
    eye = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]).expand(3, 2, 3)
    torch.testing.assert_close(theta, eye)
    torch.testing.assert_close(warped, x, atol=1e-5, rtol=0)
    torch.testing.assert_close(m.last_theta, eye)
    assert not m.last_theta.requires_grad


def test_stn_attention_mode_has_no_shear_and_equal_scales() -> None:
    m = stn_with_random_head("attention")
    theta = m.theta(rand(4, 2, 12, 20))
    assert theta.shape == (4, 2, 3)
    assert torch.equal(theta[:, 0, 1], torch.zeros(4)) and torch.equal(
        theta[:, 1, 0], torch.zeros(4)
    )
    assert torch.equal(theta[:, 0, 0], theta[:, 1, 1])
    assert not torch.allclose(theta[:, :, 2], torch.zeros(4, 2))  # translations do vary


def test_theta_from_params() -> None:
    p = torch.tensor([[0.5, 0.1, -0.2]])
    expected = torch.tensor([[[0.5, 0.0, 0.1], [0.0, 0.5, -0.2]]])
    torch.testing.assert_close(theta_from_params(p, "attention"), expected)
    torch.testing.assert_close(
        theta_from_params(torch.arange(6.0)[None], "affine")[0, 1, 2], torch.tensor(5.0)
    )
    with pytest.raises(ValueError, match=r"\(B, 3\)"):
        theta_from_params(torch.zeros(1, 6), "attention")
    with pytest.raises(ValueError, match="mode"):
        theta_from_params(p, "projective")


@pytest.mark.parametrize(("dx", "dy"), [(3, 0), (0, 2), (-4, 1), (5, -3)])
def test_stn_translation_moves_a_dot(dx: int, dy: int) -> None:
    h, w, r, c = 12, 20, 5, 9
    x = torch.zeros(1, 1, h, w)
    x[0, 0, r, c] = 1.0
    # Output pixel (i, j) reads input pixel (i + dy, j + dx): the dot moves by (-dy, -dx).
    theta = torch.tensor([[[1.0, 0.0, 2 * dx / w], [0.0, 1.0, 2 * dy / h]]])
    y = warp(x, theta)
    expected = torch.zeros_like(x)
    expected[0, 0, r - dy, c - dx] = 1.0
    torch.testing.assert_close(y, expected, atol=1e-5, rtol=0)


def test_stn_module_uses_its_regressed_theta() -> None:
    m = SpatialTransformer(1, input_size=(12, 20), mode="attention")
    with torch.no_grad():
        m.fc_theta.bias.copy_(torch.tensor([1.0, 2 * 3 / 20, 0.0]))  # shift 3 pixels
    x = torch.zeros(2, 1, 12, 20)
    x[:, 0, 4, 10] = 1.0
    y = m(x)
    assert y[:, 0].flatten(1).argmax(1).tolist() == [4 * 20 + 7] * 2


def test_stn_zoom_and_output_size() -> None:
    h, w = 12, 20
    x = torch.arange(h * w, dtype=torch.float32).view(1, 1, h, w)
    # Half-scale, centred: a 6x10 output covers the central half of the image pixel for pixel.
    y = warp(x, torch.tensor([[[0.5, 0, 0], [0, 0.5, 0]]]), output_size=(6, 10))
    torch.testing.assert_close(y, x[:, :, 3:9, 5:15])
    m = SpatialTransformer(1, input_size=(h, w), output_size=(6, 10))
    assert m(x).shape == (1, 1, 6, 10)


def test_stn_any_size_when_input_size_is_none() -> None:
    m = SpatialTransformer(3, mode="attention")
    for shape in [(2, 3, 9, 31), (1, 3, 1, 1), (2, 3, 100, 60)]:
        x = rand(*shape)
        # Grid coordinates round-trip through [-1, 1]: float32 error grows with the size.
        torch.testing.assert_close(m(x), x, atol=1e-4, rtol=0)


@pytest.mark.parametrize("mode", ["affine", "attention"])
def test_stn_gradients(mode: str) -> None:
    m = stn_with_random_head(mode)
    x = rand(2, 2, 12, 20).requires_grad_()
    (m(x) * rand(2, 2, 12, 20, seed=5)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for pname, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname


def test_stn_gradients_reach_theta_at_init() -> None:
    m = SpatialTransformer(1, input_size=(12, 20))
    x = rand(2, 1, 12, 20)
    (m(x) * rand(2, 1, 12, 20, seed=3)).sum().backward()
    assert m.fc_theta.bias.grad.abs().sum() > 0 and m.fc_theta.weight.grad.abs().sum() > 0


def test_stn_float64_determinism_and_autocast() -> None:
    a = stn_with_random_head("affine", seed=2).double()
    b = stn_with_random_head("affine", seed=2).double()
    x = rand(2, 2, 12, 20, dtype=torch.float64)
    ya = a(x)
    assert ya.dtype == torch.float64
    torch.testing.assert_close(ya, b(x), rtol=0, atol=0)
    m = stn_with_random_head("affine", seed=2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = m(rand(2, 2, 12, 20))
    assert y.shape == (2, 2, 12, 20) and torch.isfinite(y).all()


def test_stn_bad_args_and_inputs_raise() -> None:
    with pytest.raises(ValueError, match="mode"):
        SpatialTransformer(1, mode="similarity")
    with pytest.raises(ValueError, match="in_channels"):
        SpatialTransformer(0)
    with pytest.raises(ValueError, match="input_size"):
        SpatialTransformer(1, input_size=(28,))
    with pytest.raises(ValueError, match="output_size"):
        SpatialTransformer(1, output_size=(0, 5))
    with pytest.raises(ValueError, match="loc_hidden"):
        SpatialTransformer(1, loc_hidden=0)
    m = SpatialTransformer(1, input_size=(12, 20))
    with pytest.raises(ValueError, match=r"input_size=\(12, 20\)"):
        m(rand(1, 1, 20, 12))
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        m(rand(1, 2, 12, 20))
    with pytest.raises(ValueError, match="theta"):
        warp(rand(2, 1, 4, 4), torch.zeros(1, 2, 3))


def test_stn_via_registry() -> None:
    m = soft_baselines.create("stn", 3, input_size=(10, 14), mode="attention")
    assert isinstance(m, SpatialTransformer)
    assert m(rand(2, 3, 10, 14)).shape == (2, 3, 10, 14)


# --------------------------------------------------------------------------- CUDA


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize(("name", "kwargs"), BLOCKS, ids=BLOCK_IDS)
def test_cuda_and_autocast(name: str, kwargs: dict) -> None:
    m = randomise(build(name, kwargs)).cuda()
    x = rand(2, C, 6, 9)
    cpu = randomise(build(name, kwargs)).double()(x.double())
    y = m(x.cuda())
    assert y.device.type == "cuda"
    torch.testing.assert_close(y.cpu().double(), cpu, atol=1e-3, rtol=1e-3)
    with torch.autocast("cuda", dtype=torch.float16):
        ya = m(x.cuda().requires_grad_())
    assert ya.shape == x.shape and torch.isfinite(ya).all()
    ya.float().sum().backward()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_stn_cuda_and_autocast() -> None:
    m = stn_with_random_head("affine").cuda()
    x = rand(2, 2, 12, 20).cuda()
    with torch.autocast("cuda", dtype=torch.float16):
        y = m(x)
    assert y.device.type == "cuda" and y.shape == x.shape and torch.isfinite(y).all()
    assert math.isfinite(m.last_theta.float().sum().item())
