"""Helpers shared by the per-module soft-attention tests (float64 inputs, randomised
weights, explicit softmax and 1x1 convolutions for the slow references).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

DT = torch.float64


def rand(*shape: int, seed: int = 0) -> Tensor:
    """Standard normal float64 tensor from its own generator."""
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=DT)


def randomise(module: nn.Module, seed: int = 0, scale: float = 0.5) -> nn.Module:
    """float64, every parameter (zero-initialised ones included) and BN statistic random."""
    module = module.double()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=DT) * scale)
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g, dtype=DT))
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g, dtype=DT) + 0.5)
    return module


def conv1x1(conv: nn.Conv2d, v: Tensor) -> Tensor:
    """A 1x1 convolution applied to one feature vector ``v`` ``(C_in,) -> (C_out,)``."""
    out = conv.weight[:, :, 0, 0] @ v
    return out if conv.bias is None else out + conv.bias


def bn_eval(bn: nn.BatchNorm2d, v: Tensor) -> Tensor:
    """Eval-mode batch norm of one feature vector ``v`` ``(C,)``."""
    return (v - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias


def assert_all_parameters_get_gradients(module: nn.Module, x: Tensor) -> None:
    """Every parameter gets a finite, not all-zero gradient from a random linear loss."""
    x = x.clone().requires_grad_()
    y = module(x)
    (y * rand(*y.shape, seed=123)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for name, p in module.named_parameters():
        assert p.grad is not None, f"{name}: no gradient"
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"{name}: all-zero gradient"


def assert_identity_at_init(module: nn.Module, x: Tensor) -> None:
    """Exactly the identity at init, in training and eval mode."""
    for train in (True, False):
        module.train(train)
        with torch.no_grad():
            torch.testing.assert_close(module(x), x, rtol=0, atol=0)


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
