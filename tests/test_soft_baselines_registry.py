"""Registry-wide tests for ``soft_baselines``: every registered module, whatever it is.

Block contract (kind ``"block"``): ``create(name, C)`` builds it with defaults; it maps
``(B, C, H, W)`` to the same shape for non-square inputs; gradients reach the input and the
parameters; it starts as (close to) the identity unless allow-listed below; same seed gives
the same output; float64 and autocast work; bad arguments raise the documented errors.

Input size: tests use ``(B, C, H, W) = (2, 16, 7, 10)``. A block that needs larger maps may
declare a class attribute ``min_input_size = (min_h, min_w)``; the tests then use
``max(7, min_h) × max(10, min_w)`` (all blocks registered today support 7 × 10).
"""

from __future__ import annotations

import re
import sys

import pytest
import torch
from torch import nn

from soft_baselines import create, get_entry, list_modules, register
from soft_baselines.registry import _REGISTRY

BLOCKS = list_modules(kind="block")
TRANSFORMS = list_modules(kind="transform")
B, C, H, W = 2, 16, 7, 10

# Blocks whose published form is not residual-with-zero-init, so they do not start as the
# identity. Each entry documents why; the identity-at-init test skips them.
NOT_IDENTITY_AT_INIT: dict[str, str] = {
    "se": "SE (Hu et al. 2018) rescales x by sigmoid channel gates: x * σ(·) ≈ x / 2 at init",
    "cbam": "CBAM (Woo et al. 2018) multiplies x by sigmoid channel then spatial gates",
    "bam": "BAM (Park et al. 2018) is F + F * σ(Mc + Ms) ≈ 1.5 F at init (no zero-init)",
    "eca": "ECA (Wang et al. 2020) rescales x by sigmoid channel gates, like SE",
    "polarized": "PSA (Liu et al. 2021) gates x by sigmoid channel and spatial maps",
    "residual_attention": "Wang et al. 2017: (1 + M(x)) T(x) ≈ 1.5 x at init (sigmoid mask)",
}
IDENTITY_RTOL = 1e-4


def _size(name: str) -> tuple[int, int]:
    min_h, min_w = getattr(get_entry(name).factory, "min_input_size", (1, 1))
    return max(H, min_h), max(W, min_w)


def _input(name: str, seed: int = 0, dtype: torch.dtype = torch.float32, device="cpu"):
    gen = torch.Generator().manual_seed(seed)
    h, w = _size(name)
    return torch.randn(B, C, h, w, generator=gen, dtype=dtype).to(device)


def _perturb(module: nn.Module, seed: int = 1, scale: float = 0.1) -> nn.Module:
    """Add small noise to every parameter, so zero-initialised scales become non-zero."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float64)
            p.add_(scale * noise.to(device=p.device, dtype=p.dtype))
    return module


def _build(name: str, seed: int = 0, **kwargs) -> nn.Module:
    torch.manual_seed(seed)
    return create(name, C, **kwargs)


def test_registry_has_family_b_blocks():
    for name in ("a2", "cgnl", "cc", "ema", "isa", "danet", "pam", "cam"):
        assert name in BLOCKS


def test_list_modules_partitions_by_kind():
    everything = list_modules()
    assert everything == sorted(everything)
    assert sorted(BLOCKS + TRANSFORMS) == everything
    assert not set(BLOCKS) & set(TRANSFORMS)


def test_transforms_include_stn():
    assert "stn" in list_modules(kind="transform")


@pytest.mark.parametrize("name", list_modules())
def test_family_module_docstring_names_paper(name: str):
    """One file per family, its docstring naming the paper (at least a year)."""
    entry = get_entry(name)
    doc = sys.modules[entry.factory.__module__].__doc__ or ""
    assert re.search(r"\b(19|20)\d\d\b", doc), f"{entry.factory.__module__} docstring: no year"
    assert entry.doc, f"{name}: class docstring is empty"


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("name", BLOCKS)
def test_block_preserves_shape(name: str, train: bool):
    m = _perturb(_build(name)).train(train)
    x = _input(name)
    y = m(x)
    assert y.shape == x.shape
    assert y.dtype == x.dtype
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", BLOCKS)
def test_block_gradient_flow(name: str):
    m = _perturb(_build(name)).train()
    x = _input(name).requires_grad_()
    weight = torch.randn(x.shape, generator=torch.Generator().manual_seed(3))
    (m(x) * weight).sum().backward()
    assert x.grad is not None
    assert torch.isfinite(x.grad).all()
    assert x.grad.abs().sum() > 0
    grads = [p.grad for p in m.parameters() if p.requires_grad and p.grad is not None]
    assert grads, f"{name}: no parameter received a gradient"
    assert all(torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads), f"{name}: every parameter gradient is zero"
    assert any(g.abs().sum() > 0 for g in grads), f"{name}: all parameter gradients are zero"


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("name", BLOCKS)
def test_block_identity_at_init(name: str, train: bool):
    if name in NOT_IDENTITY_AT_INIT:
        pytest.skip(f"not residual in the paper: {NOT_IDENTITY_AT_INIT[name]}")
    m = _build(name).train(train)
    x = _input(name)
    with torch.no_grad():
        y = m(x)
    rel = ((y - x).norm() / x.norm()).item()
    assert rel < IDENTITY_RTOL, f"{name}: ‖out − x‖/‖x‖ = {rel:.3g} at init"


@pytest.mark.parametrize("name", BLOCKS)
def test_block_deterministic(name: str):
    outs = []
    for _ in range(2):
        m = _perturb(_build(name, seed=7), seed=8).train()
        outs.append(m(_input(name, seed=9)))
    assert torch.equal(outs[0], outs[1])
    m.eval()
    x = _input(name, seed=10)
    with torch.no_grad():
        assert torch.equal(m(x), m(x))


@pytest.mark.parametrize("name", BLOCKS)
def test_block_float64(name: str):
    m = _perturb(_build(name)).double().train()
    x = _input(name, dtype=torch.float64).requires_grad_()
    y = m(x)
    assert y.dtype == torch.float64
    assert y.shape == x.shape
    y.sum().backward()
    assert x.grad is not None and x.grad.dtype == torch.float64
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("name", BLOCKS)
def test_block_cpu_autocast_bfloat16(name: str):
    """Runs under CPU autocast (bfloat16), forward and backward, with finite results."""
    m = _perturb(_build(name)).train()
    x = _input(name).requires_grad_()
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        y = m(x)
    assert y.shape == x.shape
    assert torch.isfinite(y.float()).all()
    y.float().sum().backward()
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("name", BLOCKS)
def test_block_state_dict_round_trip(name: str):
    a = _perturb(_build(name, seed=1), seed=2).eval()
    b = _build(name, seed=3).eval()
    b.load_state_dict(a.state_dict())
    x = _input(name)
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x))


@pytest.mark.parametrize("name", BLOCKS)
def test_block_rejects_wrong_input(name: str):
    m = _build(name)
    h, w = _size(name)
    with pytest.raises(ValueError):
        m(torch.randn(B, C + 1, h, w))
    with pytest.raises(ValueError):
        m(torch.randn(C, h, w))


@pytest.mark.parametrize("bad", [0, -1])
@pytest.mark.parametrize("name", list_modules())
def test_bad_channels_raise(name: str, bad: int):
    with pytest.raises(ValueError):
        create(name, bad)
    # The module's own constructor validates too (not only ``create``).
    with pytest.raises(ValueError):
        get_entry(name).factory(bad)


@pytest.mark.parametrize("name", list_modules())
def test_unknown_kwarg_raises_type_error(name: str):
    with pytest.raises(TypeError):
        create(name, C, definitely_not_an_argument=1)


def test_create_unknown_name_lists_valid_names():
    with pytest.raises(ValueError) as info:
        create("nope", 8)
    msg = str(info.value)
    assert "nope" in msg
    for name in list_modules():
        assert name in msg


def test_duplicate_register_raises():
    name = BLOCKS[0]
    before = dict(_REGISTRY)

    class Dummy(nn.Module):
        """A stand-in module."""

    with pytest.raises(ValueError, match="already registered"):
        register(name)(Dummy)
    assert _REGISTRY == before


def test_register_rejects_unknown_kind():
    with pytest.raises(ValueError):
        register("never-registered", kind="layer")  # type: ignore[arg-type]
    assert "never-registered" not in list_modules()


@pytest.mark.parametrize("name", TRANSFORMS)
def test_transform_contract(name: str):
    """Transforms: first argument ``in_channels``; ``(B, C, H, W) -> (B, C, H', W')``."""
    torch.manual_seed(0)
    m = create(name, 3)
    x = torch.randn(B, 3, 16, 20).requires_grad_()
    y = m(x)
    assert y.dim() == 4 and y.shape[:2] == x.shape[:2]
    assert torch.isfinite(y).all()
    y.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("name", BLOCKS)
def test_block_cuda_autocast(name: str, dtype: torch.dtype):
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    if dtype is torch.bfloat16 and not torch.cuda.is_bf16_supported():
        pytest.skip("bfloat16 not supported on this GPU")
    m = _perturb(_build(name)).cuda().train()
    x = _input(name, device="cuda").requires_grad_()
    with torch.autocast(device_type="cuda", dtype=dtype):
        y = m(x)
    assert y.shape == x.shape and y.device == x.device
    assert torch.isfinite(y.float()).all()
    y.float().sum().backward()
    assert torch.isfinite(x.grad).all()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.parameters())
