"""float32 helpers for the soft-attention block tests: ``C`` channels, blocks built through
the registry, random weights.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

import soft_baselines

C = 12  # channels used throughout: below SK's default 32 groups, not a power of two


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
