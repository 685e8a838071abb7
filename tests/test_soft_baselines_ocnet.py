"""OCNet (``soft_baselines.ocnet``): object context against an explicit N x N softmax, the
pyramid's per-region loop against one masked attention over the whole map."""

from __future__ import annotations

import math

import pytest
import torch

from soft_baselines import create
from soft_baselines.ocnet import ObjectContext, region_bounds
from tests.helpers.soft import (
    assert_all_parameters_get_gradients,
    assert_identity_at_init,
    rand,
    randomise,
)


def _masked_context(oc: ObjectContext, x: torch.Tensor, grid: int) -> torch.Tensor:
    """Attention over all positions with pairs in different regions masked out."""
    b, _, h, w = x.shape
    k = oc.key(x).flatten(2).transpose(1, 2)  # (B, N, d)
    v = oc.value(x).flatten(2).transpose(1, 2)
    rows = torch.empty(h, dtype=torch.long)
    cols = torch.empty(w, dtype=torch.long)
    for r, (a, e) in enumerate(region_bounds(h, grid)):
        rows[a:e] = r
    for r, (a, e) in enumerate(region_bounds(w, grid)):
        cols[a:e] = r
    region = (rows[:, None] * grid + cols[None, :]).reshape(-1)
    same = region[:, None] == region[None, :]
    logits = k @ k.transpose(1, 2) / math.sqrt(oc.key_channels)
    logits = logits.masked_fill(~same, float("-inf"))
    e = torch.exp(logits - logits.amax(dim=-1, keepdim=True))
    y = (e / e.sum(dim=-1, keepdim=True)) @ v
    return oc.out(y.transpose(1, 2).reshape(b, -1, h, w))


def test_region_bounds():
    assert region_bounds(7, 3) == [(0, 2), (2, 4), (4, 7)]
    assert region_bounds(6, 6) == [(i, i + 1) for i in range(6)]
    assert region_bounds(2, 6) == [(0, 1), (1, 2)]  # empty regions skipped


@pytest.mark.parametrize("grid", [1, 2, 3, 6])
def test_region_context_matches_masked_attention(grid: int):
    oc = randomise(ObjectContext(5, 3, 4, 5)).eval()
    x = rand(2, 5, 7, 5)
    with torch.no_grad():
        torch.testing.assert_close(oc(x, grid=grid), _masked_context(oc, x, grid))


def test_base_oc_output_is_fused_context_and_input():
    m = randomise(create("oc_base", 6)).eval()
    x = rand(2, 6, 4, 3)
    with torch.no_grad():
        expected = x + m.fuse(torch.cat([_masked_context(m.context, x, 1), x], dim=1))
        torch.testing.assert_close(m(x), expected)


@pytest.mark.parametrize("name", ["oc_base", "oc_pyramid", "oc_asp"])
def test_identity_at_init_and_gradients(name: str):
    torch.manual_seed(0)
    kwargs = {"dilations": (1, 2, 3)} if name == "oc_asp" else {}
    x = rand(2, 8, 6, 7)
    assert_identity_at_init(create(name, 8, **kwargs).double(), x)
    assert_all_parameters_get_gradients(randomise(create(name, 8, **kwargs), scale=0.3), x)


def test_bad_arguments():
    with pytest.raises(ValueError):
        create("oc_pyramid", 8, scales=())
    with pytest.raises(ValueError):
        create("oc_asp", 8, dilations=(0,))
