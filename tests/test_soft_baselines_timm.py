"""Glimpse's soft-attention blocks against timm's, and inside timm models.

timm (a dev dependency) implements SE, ECA, CBAM, GC, non-local and SK independently. The
equivalence tests copy the weights across by the explicit mappings of
``tests/reference/timm_blocks.py`` and require equal outputs and input gradients in
float64 on random inputs; the mapping module lists where the two differ by design and
which configuration is compared.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

import soft_baselines
from soft_baselines import create, list_aliases, list_modules, timm_attn_layer

timm = pytest.importorskip("timm")
from tests.reference.timm_blocks import (  # noqa: E402
    DIFFERENCES,
    PAIRS,
    EcaModule,
    to_timm_cbam,
    to_timm_gc,
    to_timm_nonlocal,
    to_timm_sk,
)

TOL = {"rtol": 1e-10, "atol": 1e-12}


def randomise(module: nn.Module, seed: int = 0) -> nn.Module:
    """Every parameter (zero-initialised ones included) and BN running stat at random."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.5)
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return module


def rand(*shape: int, seed: int = 1) -> Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def assert_same_function(ours: nn.Module, theirs: nn.Module, x: Tensor) -> None:
    """Equal outputs and equal gradients w.r.t. the input (float64, tight tolerance)."""
    xa = x.clone().requires_grad_()
    xb = x.clone().requires_grad_()
    ya, yb = ours(xa), theirs(xb)
    torch.testing.assert_close(ya, yb, **TOL)
    weight = rand(*ya.shape, seed=99)
    (ya * weight).sum().backward()
    (yb * weight).sum().backward()
    torch.testing.assert_close(xa.grad, xb.grad, **TOL)


def glimpse(name: str, channels: int, seed: int = 0, **kwargs) -> nn.Module:
    torch.manual_seed(seed)
    return randomise(create(name, channels, **kwargs).double(), seed)


# ------------------------------------------------------------------ equivalence


def test_every_shared_block_is_compared_and_its_differences_documented():
    assert set(PAIRS) == set(DIFFERENCES)
    assert set(PAIRS) <= set(list_modules("block"))


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("name", sorted(PAIRS))
def test_default_config_matches_timm(name: str, train: bool):
    kwargs, to_timm = PAIRS[name]
    ours = glimpse(name, 16, **kwargs).train(train)
    theirs = to_timm(ours)
    if name == "cbam" and train:
        pytest.skip("CBAM compared in eval mode (timm's spatial BN set to the identity)")
    theirs.train(train)
    assert_same_function(ours, theirs, rand(3, 16, 5, 7))


@pytest.mark.parametrize(
    ("channels", "kwargs"),
    [(8, {}), (40, {"reduction": 4}), (64, {}), (12, {"kernel_size": 5, "spatial": True})],
)
def test_cbam_matches_timm(channels: int, kwargs: dict):
    ours = glimpse("cbam", channels, **kwargs).eval()
    assert_same_function(ours, to_timm_cbam(ours), rand(2, channels, 6, 5))


@pytest.mark.parametrize("channels", [3, 7, 8, 16, 64, 100, 256])
def test_eca_matches_timm_kernel_and_output(channels: int):
    ours = glimpse("eca", channels)
    # Same adaptive kernel size as timm's where timm's floor of 3 does not apply.
    theirs_k = EcaModule(channels).conv.kernel_size[0]
    if ours.kernel_size >= 3:
        assert ours.kernel_size == theirs_k
    else:
        assert channels < 8 and theirs_k == 3  # documented difference
    assert_same_function(ours, PAIRS["eca"][1](ours), rand(2, channels, 4, 3))


@pytest.mark.parametrize("fusion", ["add", "mul"])
@pytest.mark.parametrize("pooling", ["att", "avg"])
def test_gc_matches_timm(pooling: str, fusion: str):
    ours = glimpse("gc", 24, pooling=pooling, fusion=fusion)
    assert_same_function(ours, to_timm_gc(ours), rand(2, 24, 5, 6))


@pytest.mark.parametrize("inter", [4, 8])
def test_nonlocal_matches_timm(inter: int):
    ours = glimpse("nonlocal", 16, inter_channels=inter).train()
    assert_same_function(ours, to_timm_nonlocal(ours), rand(2, 16, 4, 6))


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize(
    ("channels", "kwargs"),
    [(16, {}), (12, {"branches": 3}), (64, {"groups": 8, "reduction": 4, "min_dim": 8})],
)
def test_sk_conv_matches_timm(channels: int, kwargs: dict, train: bool):
    torch.manual_seed(0)
    from soft_baselines.sk import SKConv

    ours = randomise(SKConv(channels, **kwargs).double()).train(train)
    theirs = to_timm_sk(ours).train(train)
    assert_same_function(ours, theirs, rand(2, channels, 6, 5))


def test_mapping_rejects_configs_timm_cannot_express():
    with pytest.raises(ValueError):
        to_timm_cbam(create("cbam", 16, spatial=False))
    with pytest.raises(ValueError):
        to_timm_nonlocal(create("nonlocal", 16, sub_sample=True))
    with pytest.raises(ValueError):
        to_timm_nonlocal(create("nonlocal", 16, pairwise="dot_product"))


def test_timm_default_nonlocal_differs_by_its_scale():
    """timm's default scales logits by C^-1/2: not equal, which the test above would catch."""
    ours = glimpse("nonlocal", 16)
    theirs = to_timm_nonlocal(ours)
    theirs.scale = 16**-0.5
    x = rand(2, 16, 4, 5)
    assert not torch.allclose(ours(x), theirs(x), rtol=1e-6, atol=1e-8)


# ------------------------------------------------------------------ interop


def test_timm_aliases_resolve():
    assert list_aliases() == {"nl": "nonlocal"}
    for alias, name in list_aliases().items():
        torch.manual_seed(0)
        a = create(alias, 16)
        torch.manual_seed(0)
        b = create(name, 16)
        assert type(a) is type(b)
        for pa, pb in zip(a.state_dict().values(), b.state_dict().values(), strict=True):
            assert torch.equal(pa, pb)
    # timm's other attention-type names that Glimpse implements are the same names.
    for name in ("se", "eca", "cbam", "gc", "sk"):
        assert name in list_modules("block")


@pytest.mark.parametrize(
    ("name", "rd_ratio", "attr", "expected"),
    [
        ("se", 1 / 4, "hidden", 16),
        ("cbam", 1 / 8, None, 8),
        ("sk", 1 / 2, "dim", 32),
        ("gc", 1 / 4, "hidden", 16),
        ("nonlocal", 1 / 8, "inter_channels", 8),
        ("nl", 1 / 4, "inter_channels", 16),
    ],
)
def test_rd_ratio_means_hidden_over_channels(name, rd_ratio, attr, expected):
    m = create(name, 64, rd_ratio=rd_ratio)
    if name == "cbam":
        assert m.mlp[0].out_channels == expected
    elif name == "sk":
        assert m.conv.dim == expected
    else:
        assert getattr(m, attr) == expected


def test_rd_ratio_errors_are_loud():
    with pytest.raises(ValueError, match="1/n"):
        create("se", 64, rd_ratio=0.3)
    with pytest.raises(ValueError):
        create("gc", 64, rd_ratio=-1.0)
    with pytest.raises(TypeError, match="both given"):
        create("se", 64, rd_ratio=1 / 4, reduction=4)
    with pytest.raises(TypeError, match="no rd_ratio"):
        create("eca", 64, rd_ratio=1 / 4)
    with pytest.raises(TypeError):
        create("se", 64, rd_channels=4)  # timm keyword without a Glimpse meaning


@pytest.mark.parametrize("name", ["se", "nl", "sk"])
def test_device_and_dtype_keywords(name: str):
    m = create(name, 16, device="cpu", dtype=torch.float64)
    tensors = [*m.parameters(), *(b for b in m.buffers() if b.is_floating_point())]
    assert tensors and all(t.dtype == torch.float64 and t.device.type == "cpu" for t in tensors)
    assert create(name, 16, device=None, dtype=None).fc1 if name == "se" else True
    with pytest.raises(ValueError):
        create(name, 16, dtype=torch.int64)


def test_timm_attn_layer_checks_name_now():
    with pytest.raises(ValueError, match="valid names"):
        timm_attn_layer("nope")
    with pytest.raises(ValueError, match="not a drop-in block"):
        timm_attn_layer("stn")


def _interop_blocks() -> list[str]:
    return ["se", "eca", "cbam", "gc", "nl", "sk", "a2", "cc"]


@pytest.mark.parametrize("name", _interop_blocks())
def test_glimpse_block_as_timm_resnet_attn_layer(name: str):
    torch.manual_seed(0)
    # zero_init_last=False: timm zeroes each block's last BN, which would hand the
    # attention layer (placed after it) an all-zero input and no gradient.
    model = timm.create_model(
        "resnet18",
        pretrained=False,
        num_classes=5,
        block_args={"attn_layer": timm_attn_layer(name)},
        zero_init_last=False,
    )
    blocks = [m for m in model.modules() if isinstance(m, timm.models.resnet.BasicBlock)]
    assert len(blocks) == 8
    entry = soft_baselines.get_entry(name)
    assert all(isinstance(b.se, entry.factory) for b in blocks)
    x = torch.randn(2, 3, 32, 32, requires_grad=True)
    out = model(x)
    assert out.shape == (2, 5)
    out.square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    grads = [p.grad for b in blocks for p in b.se.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("name", list_modules("block"))
def test_every_block_builds_through_timm_create_attn(name: str):
    """timm's own factory, called as its models call it (channels, device=, dtype=)."""
    from timm.layers import create_attn

    torch.manual_seed(0)
    layer = create_attn(timm_attn_layer(name), 16, device="cpu", dtype=torch.float64)
    assert isinstance(layer, soft_baselines.get_entry(name).factory)
    assert all(p.dtype == torch.float64 for p in layer.parameters())
    x = rand(2, 16, 6, 7)
    assert layer(x).shape == x.shape
