"""The drop-in contract through ``soft_baselines.create`` on each block's variants.

Every variant worth covering of SE, CBAM/BAM, SK, non-local and GCNet (shape, gradients,
determinism, float64, autocast, wrong input, identity at init, bad arguments), and of
A²-Net, CGNL, CCNet, EMANet, ISA and DANet (gradients to every parameter, tiny and
degenerate sizes, one channel, bad hyperparameters, zero-initialised scales). The
registry-wide tests over every registered module with its defaults are in
``test_soft_baselines_registry.py``.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import soft_baselines
from soft_baselines import create
from soft_baselines.a2net import DoubleAttention
from soft_baselines.ccnet import CrissCrossAttention
from soft_baselines.cgnl import CompactGeneralizedNonLocal
from soft_baselines.danet import ChannelAttention, PositionAttention
from soft_baselines.emanet import EMAttentionUnit
from soft_baselines.isa import (
    InterlacedSparseSelfAttention,
)
from soft_baselines.nonlocal_block import PAIRWISE_FUNCTIONS
from tests.helpers.soft import _perturb, _x
from tests.helpers.soft_float32 import C, build, rand, randomise

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


FAMILY_B = ("a2", "cgnl", "cc", "ema", "isa", "danet", "pam", "cam")
# ISA's default block (8 × 8) on a map no larger than 8 × 8 leaves one position per
# long-range group, where attention is trivially 1 and the query/key get no gradient.
SMALL_MAP_KWARGS = {"isa": {"block_size": (2, 3)}}


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
