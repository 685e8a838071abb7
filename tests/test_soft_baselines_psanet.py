"""PSANet (``soft_baselines.psanet``): the gathered collect / distribute matrices against a
loop over position pairs reading the full over-complete maps."""

from __future__ import annotations

import pytest
import torch

from soft_baselines.psanet import PointwiseSpatialAttention, relative_index
from tests.helpers.soft import (
    assert_all_parameters_get_gradients,
    assert_identity_at_init,
    rand,
    randomise,
)


def _full_maps(head, xr: torch.Tensor, hm: int, wm: int) -> torch.Tensor:
    """All (2 hm - 1)(2 wm - 1) predicted values: (B, 2hm-1, 2wm-1, H, W)."""
    y = head.predict(head.hidden(xr))
    return y.view(y.shape[0], 2 * hm - 1, 2 * wm - 1, *y.shape[2:])


def _reference(m: PointwiseSpatialAttention, x: torch.Tensor) -> torch.Tensor:
    _b, _, h, w = x.shape
    hm, wm = m.max_size
    xr = m.reduce(x)
    col = _full_maps(m.collect_head, xr, hm, wm)
    dis = _full_maps(m.distribute_head, xr, hm, wm)
    n = h * w
    zc = torch.zeros_like(xr)
    zd = torch.zeros_like(xr)
    for yi in range(h):
        for xi in range(w):
            for yj in range(h):
                for xj in range(w):
                    # collect: i reads j with its own map at offset j - i
                    a = col[:, yj - yi + hm - 1, xj - xi + wm - 1, yi, xi]
                    zc[:, :, yi, xi] += a[:, None] * xr[:, :, yj, xj] / n
                    # distribute: j sends to i with j's map at offset i - j
                    d = dis[:, yi - yj + hm - 1, xi - xj + wm - 1, yj, xj]
                    zd[:, :, yi, xi] += d[:, None] * xr[:, :, yj, xj] / n
    return x + m.fuse(torch.cat([zc, zd], dim=1))


@pytest.mark.parametrize(("h", "w"), [(3, 4), (4, 4), (1, 3)])
def test_matches_pairwise_loop(h: int, w: int):
    m = randomise(PointwiseSpatialAttention(4, inter_channels=3, max_size=(4, 5))).eval()
    x = rand(2, 4, h, w)
    with torch.no_grad():
        torch.testing.assert_close(m(x), _reference(m, x))


def test_relative_index_centre_and_corners():
    idx = relative_index(2, 3)  # offsets in a 3 x 5 map
    assert idx[0, 0] == 1 * 5 + 2  # zero offset: the centre
    assert idx[0, 5] == 2 * 5 + 4  # (dy, dx) = (1, 2)
    assert idx[5, 0] == 0  # (-1, -2)


def test_too_large_input_raises_and_identity_at_init():
    torch.manual_seed(0)
    m = PointwiseSpatialAttention(8, max_size=(6, 6)).double()
    with pytest.raises(ValueError, match="max_size"):
        m(rand(2, 8, 7, 3))
    x = rand(2, 8, 5, 6)
    assert_identity_at_init(m, x)
    assert_all_parameters_get_gradients(randomise(m, scale=0.3), x)
