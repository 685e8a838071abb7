"""``soft_baselines.nonlocal_block``: the non-local block (Wang et al. 2018) against a
naive reference.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from soft_baselines.nonlocal_block import PAIRWISE_FUNCTIONS, NonLocalBlock
from tests.helpers.soft_float32 import conv1x1, rand, randomise

# --------------------------------------------------------------------------- non-local


def naive_nonlocal(m: NonLocalBlock, x: Tensor) -> Tensor:
    """The paper's equations position by position, with explicit loops (slow, tiny inputs)."""
    bsz, _, h, w = x.shape
    gaussian = m.pairwise == "gaussian"

    def q_emb(v: Tensor) -> Tensor:
        return v if gaussian else conv1x1(m.theta, v)

    def k_emb(v: Tensor) -> Tensor:
        return v if gaussian else conv1x1(m.phi, v)

    if m.sub_sample:  # keys and values max-pooled over 2x2 windows (clipped at the edges)
        kh, kw = (2 if h >= 2 else 1), (2 if w >= 2 else 1)
        windows = [
            [(r, c) for r in range(i, min(i + kh, h)) for c in range(j, min(j + kw, w))]
            for i in range(0, h, kh)
            for j in range(0, w, kw)
        ]
    else:
        windows = [[(r, c)] for r in range(h) for c in range(w)]
    out = torch.empty(bsz, m.inter_channels, h, w, dtype=x.dtype)
    for b in range(bsz):
        keys, values = [], []
        for win in windows:
            keys.append(torch.stack([k_emb(x[b, :, r, c]) for r, c in win]).amax(0))
            values.append(torch.stack([conv1x1(m.g, x[b, :, r, c]) for r, c in win]).amax(0))
        n = len(windows)
        for i in range(h):
            for j in range(w):
                qi = q_emb(x[b, :, i, j])
                if m.pairwise in ("gaussian", "embedded_gaussian"):
                    f = torch.stack([torch.exp(qi @ kj) for kj in keys])
                    norm = f.sum()
                elif m.pairwise == "dot_product":
                    f = torch.stack([qi @ kj for kj in keys])
                    norm = n
                else:
                    wf = m.concat_project.weight[0]
                    f = torch.stack([torch.relu(wf @ torch.cat([qi, kj])) for kj in keys])
                    norm = n
                out[b, :, i, j] = sum(f[t] * values[t] for t in range(n)) / norm
    return x + m.bn(m.w_z(out))


@pytest.mark.parametrize("pairwise", PAIRWISE_FUNCTIONS)
@pytest.mark.parametrize("sub_sample", [False, True])
def test_nonlocal_matches_naive_reference(pairwise: str, sub_sample: bool) -> None:
    torch.manual_seed(0)
    m = NonLocalBlock(6, pairwise=pairwise, inter_channels=3, sub_sample=sub_sample)
    m = randomise(m, scale=0.4).double().eval()
    x = rand(2, 6, 3, 5, dtype=torch.float64) * 0.7  # odd sizes: clipped pooling windows
    torch.testing.assert_close(m(x), naive_nonlocal(m, x))


@pytest.mark.parametrize("pairwise", PAIRWISE_FUNCTIONS)
def test_nonlocal_pairwise_weights(pairwise: str) -> None:
    m = randomise(NonLocalBlock(6, pairwise=pairwise, sub_sample=True)).double().eval()
    x = rand(2, 6, 4, 5, dtype=torch.float64)
    wts = m.pairwise_weights(x)
    assert wts.shape == (2, 20, 2 * 3)
    if pairwise in ("gaussian", "embedded_gaussian"):
        torch.testing.assert_close(wts.sum(-1), torch.ones(2, 20, dtype=torch.float64))
    # forward = x + BN(W_z (weights @ values)).
    _, _, v = m.embed(x)
    y = (wts @ v).transpose(1, 2).reshape(2, m.inter_channels, 4, 5)
    torch.testing.assert_close(m(x), x + m.bn(m.w_z(y)))


def test_nonlocal_default_inter_channels_and_params() -> None:
    assert NonLocalBlock(12).inter_channels == 6
    assert NonLocalBlock(1).inter_channels == 1
    gauss = NonLocalBlock(12, pairwise="gaussian")
    assert gauss.theta is None and gauss.phi is None
    assert NonLocalBlock(12, pairwise="concatenation").concat_project.weight.shape == (1, 12)
