"""``soft_baselines._ops.spatial_mean``: the lean-backward global average pool."""

from __future__ import annotations

import torch

from soft_baselines._ops import spatial_mean


def test_spatial_mean_matches_mean_in_value_gradient_and_second_order():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 3, dtype=torch.float64)
    torch.testing.assert_close(spatial_mean(x), x.mean(dim=(2, 3)), rtol=0, atol=0)
    (ga,) = torch.autograd.grad((spatial_mean(x) * w).sum(), x)
    (gb,) = torch.autograd.grad((x.mean(dim=(2, 3)) * w).sum(), x)
    torch.testing.assert_close(ga, gb, rtol=1e-15, atol=0)
    # the gradient is a broadcast view: no full-size write
    assert ga.stride()[2:] == (0, 0)
    assert torch.autograd.gradcheck(spatial_mean, (x,))
    assert torch.autograd.gradgradcheck(lambda t: spatial_mean(t * t), (x,))


def test_spatial_mean_into_a_leaf_accumulates_a_proper_gradient():
    """Two paths into one leaf (the gate's and the pooled one), as in SE: ``x.grad`` is the
    sum, laid out like ``x`` (AccumulateGrad does not keep the stride-0 view)."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    (x * torch.sigmoid(spatial_mean(x))[:, :, None, None]).sum().backward()
    got = x.grad.clone()
    x.grad = None
    (x * torch.sigmoid(x.mean(dim=(2, 3)))[:, :, None, None]).sum().backward()
    torch.testing.assert_close(got, x.grad)
    assert got.is_contiguous()
    with torch.no_grad():  # no graph: the plain mean
        assert spatial_mean(x).grad_fn is None
