"""DGMN (``soft_baselines.dgmn``): grid_sample reads against bilinear interpolation written
out, and the whole block against a node-by-node loop."""

from __future__ import annotations

import math

import pytest
import torch

from soft_baselines._local import neighbourhoods
from soft_baselines.dgmn import DynamicGraphMessagePassing, sample_nodes
from tests.helpers.soft import (
    assert_all_parameters_get_gradients,
    assert_identity_at_init,
    conv1x1,
    rand,
    randomise,
)


def _bilinear(x: torch.Tensor, r: float, c: float) -> torch.Tensor:
    """``x (C, H, W)`` read at fractional ``(r, c)``, zero outside (four-corner weights)."""
    h, w = x.shape[1:]
    r0, c0 = math.floor(r), math.floor(c)
    out = torch.zeros(x.shape[0], dtype=x.dtype)
    for rr, wr in ((r0, 1 - (r - r0)), (r0 + 1, r - r0)):
        for cc, wc in ((c0, 1 - (c - c0)), (c0 + 1, c - c0)):
            if 0 <= rr < h and 0 <= cc < w:
                out += wr * wc * x[:, rr, cc]
    return out


def test_sample_nodes_is_bilinear_with_zero_padding():
    x = rand(2, 3, 4, 5)
    pos = rand(2, 2, 6, 2, seed=1) * 3 + 1.5  # some inside, some beyond the edges
    out = sample_nodes(x, pos)
    for b in range(2):
        for k in range(2):
            for n in range(6):
                r, c = pos[b, k, n].tolist()
                torch.testing.assert_close(out[b, :, k, n], _bilinear(x[b], r, c))


@pytest.mark.parametrize("d", [1, 2])
def test_zero_offsets_read_the_dilated_grid(d: int):
    torch.manual_seed(0)
    m = DynamicGraphMessagePassing(4, dilations=(d,)).double()
    x = rand(2, 4, 5, 6)
    pos = m.positions(x, 0)  # offset convs are zero at init
    torch.testing.assert_close(sample_nodes(x, pos), neighbourhoods(x, 3, dilation=d))


def _reference(m: DynamicGraphMessagePassing, x: torch.Tensor) -> torch.Tensor:
    b, c, h, w = x.shape
    g = m.groups
    keys, values = m.key(x), m.value(x)
    msg = torch.zeros(b, c, h, w, dtype=x.dtype)
    for s, d in enumerate(m.dilations):
        delta = m.offsets[s](x)  # (B, 2K, H, W): (row, col) per node
        filters = m.filters(x)  # (B, S*K*G, H, W)
        for n in range(b):
            for i in range(h):
                for j in range(w):
                    q = conv1x1(m.query, x[n, :, i, j])
                    grid = [(a, e) for a in (-1, 0, 1) for e in (-1, 0, 1)]
                    ks, vs = [], []
                    for t, (a, e) in enumerate(grid):
                        r = i + d * a + delta[n, 2 * t, i, j]
                        cc = j + d * e + delta[n, 2 * t + 1, i, j]
                        ks.append(_bilinear(keys[n], float(r), float(cc)))
                        vs.append(_bilinear(values[n], float(r), float(cc)))
                    aff = torch.softmax(
                        torch.stack([q @ k for k in ks]) / math.sqrt(m.key_channels), 0
                    )
                    f = filters[n, s * 9 * g : (s + 1) * 9 * g, i, j].view(g, 9)
                    for t in range(9):
                        weight = (aff[t] * f[:, t]).repeat_interleave(c // g)
                        msg[n, :, i, j] += m.beta[s] * weight * vs[t]
    return x + m.bn(m.out(msg))


def test_matches_node_loop():
    m = randomise(DynamicGraphMessagePassing(4, dilations=(1, 2), groups=2), scale=0.3).eval()
    x = rand(2, 4, 3, 4)
    with torch.no_grad():
        torch.testing.assert_close(m(x), _reference(m, x))


def test_identity_at_init_and_gradients():
    torch.manual_seed(0)
    x = rand(2, 8, 5, 6)
    assert_identity_at_init(DynamicGraphMessagePassing(8).double(), x)
    assert_all_parameters_get_gradients(randomise(DynamicGraphMessagePassing(8), scale=0.3), x)
    with pytest.raises(ValueError):
        DynamicGraphMessagePassing(8, groups=3)
    with pytest.raises(ValueError):
        DynamicGraphMessagePassing(8, dilations=())
