"""GloRe (``soft_baselines.glore``) against the paper's equations written with loops."""

from __future__ import annotations

import pytest
import torch

from soft_baselines.glore import GloRe
from tests.helpers.soft import (
    assert_all_parameters_get_gradients,
    assert_identity_at_init,
    bn_eval,
    conv1x1,
    rand,
    randomise,
)


def _reference(m: GloRe, x: torch.Tensor) -> torch.Tensor:
    """V = phi(X) B^T, Z = relu(W_g ((I - A_g) V^T)^T), Y = Z B, out = x + BN(W_e Y)."""
    _, _c, h, w = x.shape
    s, k = m.num_state, m.num_node
    a = m.adjacency.weight[:, :, 0]  # (K, K)
    wg = m.state_update.weight[:, :, 0]  # (S, S)
    out = torch.empty_like(x)
    for b in range(x.shape[0]):
        pix = [(i, j) for i in range(h) for j in range(w)]
        state = torch.stack([conv1x1(m.state, x[b, :, i, j]) for i, j in pix], 1)  # (S, L)
        proj = torch.stack([conv1x1(m.proj, x[b, :, i, j]) for i, j in pix], 1)  # (K, L)
        v = torch.zeros(s, k, dtype=x.dtype)
        for node in range(k):
            for pos in range(len(pix)):
                v[:, node] += state[:, pos] * proj[node, pos]
        diffused = v - v @ a.T  # node n: V[:, n] - sum_m A[n, m] V[:, m]
        z = torch.relu(wg @ diffused)
        for pos, (i, j) in enumerate(pix):
            y = sum(z[:, node] * proj[node, pos] for node in range(k))
            e = m.extend.weight[:, :, 0, 0] @ y
            out[b, :, i, j] = x[b, :, i, j] + bn_eval(m.bn, e)
    return out


def test_matches_loop_reference():
    m = randomise(GloRe(6, num_state=3, num_node=2)).eval()
    x = rand(2, 6, 3, 4)
    with torch.no_grad():
        torch.testing.assert_close(m(x), _reference(m, x))


def test_identity_at_init_and_gradients():
    torch.manual_seed(0)
    assert_identity_at_init(GloRe(8).double(), rand(2, 8, 3, 5))
    assert_all_parameters_get_gradients(randomise(GloRe(8)).train(), rand(2, 8, 3, 5))


def test_default_widths_and_bad_arguments():
    m = GloRe(16)
    assert (m.num_state, m.num_node) == (8, 4)
    with pytest.raises(ValueError):
        GloRe(16, num_node=0)
