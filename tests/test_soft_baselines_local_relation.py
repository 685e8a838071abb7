"""Local relation layer (``soft_baselines.local_relation``) against a window loop."""

from __future__ import annotations

import pytest
import torch

from soft_baselines.local_relation import LocalRelation
from tests.helpers.soft import (
    assert_all_parameters_get_gradients,
    assert_identity_at_init,
    conv1x1,
    rand,
    randomise,
)


def _reference(m: LocalRelation, x: torch.Tensor) -> torch.Tensor:
    b, c, h, w = x.shape
    r, heads = m.kernel_size // 2, m.heads
    y = torch.zeros(b, c, h, w, dtype=x.dtype)
    for n in range(b):
        for i in range(h):
            for j in range(w):
                q = conv1x1(m.query, x[n, :, i, j])
                logits, values = [], []
                for di in range(-r, r + 1):
                    for dj in range(-r, r + 1):
                        ii, jj = i + di, j + dj
                        if not (0 <= ii < h and 0 <= jj < w):
                            continue  # outside the map: not in the softmax
                        k = conv1x1(m.key, x[n, :, ii, jj])
                        offset = torch.tensor([di, dj], dtype=x.dtype)
                        logits.append(-((q - k) ** 2) + m.geo(offset))  # (heads,)
                        values.append(conv1x1(m.value, x[n, :, ii, jj]))
                weights = torch.softmax(torch.stack(logits), dim=0)  # (P, heads)
                v = torch.stack(values)  # (P, C)
                per_channel = weights.repeat_interleave(c // heads, dim=1)  # (P, C)
                y[n, :, i, j] = (per_channel * v).sum(dim=0)
    return x + m.bn(m.out(y))


@pytest.mark.parametrize(("k", "heads"), [(3, 2), (5, 1), (7, 3)])
def test_matches_window_loop(k: int, heads: int):
    m = randomise(LocalRelation(6, kernel_size=k, heads=heads, geo_hidden=4), scale=0.3).eval()
    x = rand(2, 6, 4, 5)
    with torch.no_grad():
        torch.testing.assert_close(m(x), _reference(m, x))


def test_identity_at_init_and_gradients():
    torch.manual_seed(0)
    x = rand(2, 8, 4, 6)
    assert_identity_at_init(LocalRelation(8, kernel_size=3).double(), x)
    assert_all_parameters_get_gradients(randomise(LocalRelation(8, 3), scale=0.3), x)


def test_bad_arguments():
    with pytest.raises(ValueError):
        LocalRelation(8, kernel_size=4)
    with pytest.raises(ValueError):
        LocalRelation(8, heads=3)
