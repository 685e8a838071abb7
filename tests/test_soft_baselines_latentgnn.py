"""LatentGNN (``soft_baselines.latentgnn``): the low-rank fast path against the dense N x N
operator it factorises."""

from __future__ import annotations

import math

import pytest
import torch

from soft_baselines.latentgnn import LatentGNN
from tests.helpers.soft import (
    assert_all_parameters_get_gradients,
    assert_identity_at_init,
    rand,
    randomise,
)


def _dense_reference(m: LatentGNN, x: torch.Tensor) -> torch.Tensor:
    """Build the N x N operator Phi A Psi^T explicitly and apply it to X."""
    b, c, h, w = x.shape
    feats = x.flatten(2).transpose(1, 2)  # (B, N, C)
    out = []
    for i in range(b):
        psi = torch.relu(m.to_latent.weight[:, :, 0, 0] @ feats[i].T + m.to_latent.bias[:, None])
        phi = torch.relu(
            m.to_visible.weight[:, :, 0, 0] @ feats[i].T + m.to_visible.bias[:, None]
        )  # (D, N)
        psi = psi / (psi.sum(dim=1, keepdim=True) + 1e-6)  # over positions
        phi = phi / (phi.sum(dim=0, keepdim=True) + 1e-6)  # over latent nodes
        z = psi @ feats[i]  # (D, C)
        logits = z @ z.T / math.sqrt(c)
        a = torch.exp(logits - logits.max(dim=1, keepdim=True).values)
        a = a / a.sum(dim=1, keepdim=True)
        operator = phi.T @ a @ psi  # (N, N), rank <= D
        assert torch.linalg.matrix_rank(operator) <= m.latent_nodes
        y = operator @ feats[i]  # (N, C)
        out.append(y.T.reshape(c, h, w))
    y = torch.stack(out)
    return x + m.bn(m.out(y))


@pytest.mark.parametrize("latent", [2, 5])
def test_fast_path_matches_dense_operator(latent: int):
    m = randomise(LatentGNN(6, latent_nodes=latent)).eval()
    x = rand(2, 6, 4, 5)
    with torch.no_grad():
        torch.testing.assert_close(m(x), _dense_reference(m, x))


def test_kernels_are_normalised():
    m = randomise(LatentGNN(6, latent_nodes=3))
    psi, phi = m.kernels(rand(2, 6, 4, 4))
    assert (psi >= 0).all() and (phi >= 0).all()
    active = psi.sum(dim=1) > 0.5  # columns not switched off by the ReLU
    cols = psi.sum(dim=1)[active]
    torch.testing.assert_close(cols, torch.ones_like(cols), rtol=0, atol=1e-3)  # 1e-6 guard
    rows = phi.sum(dim=2)
    torch.testing.assert_close(
        rows[rows > 0.5], torch.ones_like(rows[rows > 0.5]), rtol=0, atol=1e-3
    )


def test_identity_at_init_and_gradients():
    torch.manual_seed(0)
    assert_identity_at_init(LatentGNN(8).double(), rand(2, 8, 3, 5))
    assert_all_parameters_get_gradients(randomise(LatentGNN(8, 4), scale=0.3), rand(2, 8, 3, 5))
