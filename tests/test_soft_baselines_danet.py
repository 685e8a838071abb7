"""``soft_baselines.danet``: position and channel attention (DANet, Fu et al. 2019)
against naive references.
"""

from __future__ import annotations

import torch
from torch import Tensor

from soft_baselines.danet import ChannelAttention, DualAttention, PositionAttention
from tests.helpers.soft import _conv1x1, _explicit_softmax, _perturb, _x

# --------------------------------------------------------------------------- DANet


def _pam_reference(m: PositionAttention, x: Tensor) -> Tensor:
    b, c, h, w = x.shape
    f = x.reshape(b, c, h * w)
    q, k, v = _conv1x1(m.query, f), _conv1x1(m.key, f), _conv1x1(m.value, f)
    n = h * w
    out = torch.zeros_like(f)
    for i in range(n):
        s_i = torch.exp((q[:, :, i : i + 1] * k).sum(1))  # (B, N): exp(B_iᵀ C_j)
        s_i = s_i / s_i.sum(1, keepdim=True)
        out[:, :, i] = (v * s_i[:, None, :]).sum(-1)
    return x + m.alpha * out.reshape(b, c, h, w)


def _cam_reference(m: ChannelAttention, x: Tensor) -> Tensor:
    b, c, h, w = x.shape
    f = x.reshape(b, c, h * w)
    energy = f @ f.transpose(1, 2)
    # softmax(max − energy) == softmax(−energy): a softmax is shift-invariant per row.
    att = _explicit_softmax(-energy, dim=2)
    return x + m.beta * (att @ f).reshape(b, c, h, w)


def test_pam_matches_naive_reference():
    torch.manual_seed(0)
    m = _perturb(PositionAttention(16)).double()
    x = _x(2, 16, 3, 4)
    torch.testing.assert_close(m(x), _pam_reference(m, x))


def test_cam_matches_naive_reference():
    m = _perturb(ChannelAttention(6)).double()
    x = 0.3 * _x(2, 6, 3, 4)
    torch.testing.assert_close(m(x), _cam_reference(m, x))


def test_cam_stays_finite_for_large_energies():
    m = _perturb(ChannelAttention(4))
    x = 1e3 * torch.randn(2, 4, 8, 8)
    assert torch.isfinite(m(x)).all()
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        assert torch.isfinite(m(x).float()).all()


def test_danet_is_sum_of_pam_and_cam():
    torch.manual_seed(0)
    m = _perturb(DualAttention(16)).double()
    x = _x(2, 16, 3, 5)
    torch.testing.assert_close(m(x), m.pam(x) + m.cam(x) - x)
    torch.testing.assert_close(m(x), _pam_reference(m.pam, x) + _cam_reference(m.cam, x) - x)
