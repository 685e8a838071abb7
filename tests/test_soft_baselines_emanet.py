"""``soft_baselines.emanet``: expectation-maximisation attention (Li et al. 2019) against
a reference.
"""

from __future__ import annotations

import torch
from torch import Tensor

from soft_baselines.emanet import EMAttentionUnit
from tests.helpers.soft import DT, _conv1x1, _explicit_softmax, _perturb, _x

# --------------------------------------------------------------------------- EMANet


def _em_reference(m: EMAttentionUnit, x: Tensor, iters: int, bases: Tensor):
    """Per-sample EM with explicit loops; returns (block output, final bases (B, K, C))."""
    b, c, h, w = x.shape
    feats = _conv1x1(m.conv_in, x.reshape(b, c, h * w))  # (B, C, N)
    recons, mus = [], []
    for i in range(b):
        xi = feats[i].t()  # (N, C)
        mu = bases.clone()  # (K, C)
        for _ in range(iters):
            z = _explicit_softmax(m.lam * xi @ mu.t(), dim=1)  # (N, K)
            mu = torch.stack(
                [(z[:, k : k + 1] * xi).sum(0) / (1e-6 + z[:, k].sum()) for k in range(len(mu))]
            )
            mu = mu / mu.norm(dim=1, keepdim=True).clamp_min(1e-12)
        recons.append((z @ mu).t())  # (C, N)
        mus.append(mu)
    recon = torch.stack(recons).reshape(b, c, h, w)
    return x + m.norm(m.conv_out(torch.relu(recon))), torch.stack(mus)


def _ema(**kwargs) -> EMAttentionUnit:
    torch.manual_seed(0)
    return _perturb(EMAttentionUnit(8, num_bases=5, **kwargs)).double()


def test_ema_eval_matches_reference_and_keeps_bases():
    m = _ema(iters=2, eval_iters=4).eval()
    x = _x(2, 8, 3, 5)
    before = m.bases.clone()
    expected, _ = _em_reference(m, x, iters=4, bases=before)
    torch.testing.assert_close(m(x), expected)
    assert torch.equal(m.bases, before)


def test_ema_train_moving_average_update():
    m = _ema(iters=3, momentum=0.9).train()
    x = _x(2, 8, 3, 5)
    before = m.bases.clone()
    expected_out, mus = _em_reference(m, x, iters=3, bases=before)
    y = m(x)
    torch.testing.assert_close(y, expected_out)
    new = 0.9 * before + 0.1 * mus.mean(0)
    torch.testing.assert_close(m.bases, new / new.norm(dim=1, keepdim=True))
    torch.testing.assert_close(m.bases.norm(dim=1), torch.ones(5, dtype=DT))
    assert not m.bases.requires_grad and m.bases.grad_fn is None
    assert "bases" in m.state_dict() and "bases" not in dict(m.named_parameters())


def test_ema_updates_carry_no_autograd_history():
    m = _ema().train()
    for seed in range(3):  # repeated forward/backward: the in-place update must not break it
        x = _x(2, 8, 4, 4, seed=seed).requires_grad_()
        m(x).sum().backward()
        assert m.bases.grad_fn is None and not m.bases.requires_grad
    assert m.conv_in.weight.grad.abs().sum() > 0


def test_ema_momentum_one_freezes_bases_and_init_is_unit_norm():
    m = _ema(momentum=1.0).train()
    torch.testing.assert_close(m.bases.norm(dim=1), torch.ones(5, dtype=DT))
    before = m.bases.clone()
    m(_x(2, 8, 3, 3))
    torch.testing.assert_close(m.bases, before)
    assert EMAttentionUnit(16).bases.shape == (64, 16)
