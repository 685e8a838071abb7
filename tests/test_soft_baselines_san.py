"""SAN pairwise / patchwise self-attention (``soft_baselines.san``) against footprint loops.

gamma contains batch norms; the references run in eval mode, where gamma acts on each
relation vector independently.
"""

from __future__ import annotations

import pytest
import torch

from soft_baselines import create
from soft_baselines.san import SelfAttention, normalised_coordinates
from tests.helpers.soft import (
    assert_all_parameters_get_gradients,
    assert_identity_at_init,
    conv1x1,
    rand,
    randomise,
)


def _gamma(m: SelfAttention, v: torch.Tensor) -> torch.Tensor:
    return m.gamma(v[None, :, None, None])[0, :, 0, 0]


def _reference(m: SelfAttention, x: torch.Tensor) -> torch.Tensor:
    b, c, h, w = x.shape
    r, share = m.kernel_size // 2, m.share
    coords = normalised_coordinates(h, w, dtype=x.dtype)[0]  # (2, H, W)
    wp = m.position.weight if m.position is not None else None
    y = torch.zeros(b, c, h, w, dtype=x.dtype)
    for n in range(b):
        for i in range(h):
            for j in range(w):
                phi = conv1x1(m.phi, x[n, :, i, j])
                window = [(i + di, j + dj) for di in range(-r, r + 1) for dj in range(-r, r + 1)]
                inside = [0 <= a < h and 0 <= e < w for a, e in window]
                psi = [
                    conv1x1(m.psi, x[n, :, a, e]) if ok else torch.zeros_like(phi)
                    for (a, e), ok in zip(window, inside, strict=True)
                ]
                if m.mode == "pairwise":
                    logits = []
                    for (a, e), ok, p in zip(window, inside, psi, strict=True):
                        if ok:
                            rel = wp @ (coords[:, i, j] - coords[:, a, e])
                            logits.append(_gamma(m, torch.cat([phi - p, rel])))
                    logits = torch.stack(logits)  # (P, C / share)
                else:
                    full = _gamma(m, torch.cat([phi, *psi]))  # ((C / share) * kk,)
                    full = full.view(c // share, len(window)).T  # (kk, C / share)
                    logits = full[torch.tensor(inside)]
                weights = torch.softmax(logits, dim=0).repeat_interleave(share, dim=1)
                values = torch.stack(
                    [
                        conv1x1(m.beta, x[n, :, a, e])
                        for (a, e), ok in zip(window, inside, strict=False)
                        if ok
                    ]
                )
                y[n, :, i, j] = (weights * values).sum(dim=0)
    return x + m.bn(m.out(y))


@pytest.mark.parametrize("k", [3, 5])
@pytest.mark.parametrize("mode", ["pairwise", "patchwise"])
def test_matches_footprint_loop(mode: str, k: int):
    m = randomise(SelfAttention(6, mode=mode, kernel_size=k, share=2, rel_channels=2), 0, 0.3)
    m.eval()
    x = rand(2, 6, 4, 5)
    with torch.no_grad():
        torch.testing.assert_close(m(x), _reference(m, x))


def test_coordinates_span_minus_one_to_one():
    c = normalised_coordinates(3, 1, dtype=torch.float64)[0]
    assert c[0, :, 0].tolist() == [-1.0, 0.0, 1.0]
    assert c[1].abs().sum() == 0  # a single column sits at 0


@pytest.mark.parametrize("name", ["san_pairwise", "san_patchwise"])
def test_identity_at_init_and_gradients(name: str):
    torch.manual_seed(0)
    x = rand(2, 8, 4, 6)
    assert_identity_at_init(create(name, 8, kernel_size=3).double(), x)
    assert_all_parameters_get_gradients(randomise(create(name, 8, kernel_size=3), 0, 0.3), x)
    with pytest.raises(TypeError):
        create(name, 8, mode="pairwise")
    with pytest.raises(ValueError):
        create(name, 8, share=3)
