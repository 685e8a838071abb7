"""Helpers shared by the RAM/REINFORCE tests: a toy image source, the gradient of one
loss term.
"""

from __future__ import annotations

import torch

from agents.ram import RAM
from agents.reinforce import ReinforceConfig, collect_rollout, reinforce_loss
from envs import GlimpseVectorEnv


def _toy_source(n: int = 64, size: int = 16, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    images = (torch.rand(n, 1, size, size, generator=g) * 255).to(torch.uint8)
    return images, torch.randint(0, 10, (n,), generator=g)


def _term_grads(ram: RAM, venv: GlimpseVectorEnv, term: str) -> dict[str, torch.Tensor]:
    """Gradient of one term of the hybrid loss on one real rollout, per parameter.

    ``reinforce_loss`` has no switch for the classification term, so a term's gradient is
    that of ``loss(term on) - loss(term off)``: both share the rollout's graph, and the other
    terms' gradients meet at the rollout tensors as ``g + (-g)``, which is exactly zero.
    """
    torch.manual_seed(1)
    venv.reset(seed=0)
    ro = collect_rollout(ram, venv)
    off = ReinforceConfig(policy_coef=0.0, baseline_coef=0.0, entropy_coef=0.0)
    on = {
        "policy": ReinforceConfig(policy_coef=1.0, baseline_coef=0.0),
        "baseline": ReinforceConfig(policy_coef=0.0, baseline_coef=1.0),
        "classification": off,
    }[term]
    if term == "classification":
        diff = reinforce_loss(ro, on)[0]
    else:
        diff = reinforce_loss(ro, on)[0] - reinforce_loss(ro, off)[0]
    names, params = zip(*ram.named_parameters(), strict=True)
    grads = torch.autograd.grad(diff, params, allow_unused=True)
    return {
        n: torch.zeros_like(p) if g is None else g
        for n, p, g in zip(names, params, grads, strict=True)
    }


def _trained(grads: dict[str, torch.Tensor]) -> set[str]:
    """Modules (first name component) that receive a nonzero gradient."""
    return {n.split(".")[0] for n, g in grads.items() if g.abs().sum() > 0}
