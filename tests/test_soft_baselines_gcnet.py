"""``soft_baselines.gcnet``: the global context block (Cao et al. 2019) against a reference."""

from __future__ import annotations

import torch

from soft_baselines.gcnet import GlobalContextBlock
from tests.helpers.soft_float32 import C, conv1x1, rand, randomise

# --------------------------------------------------------------------------- GCNet


def test_gc_matches_reference() -> None:
    m = randomise(GlobalContextBlock(C, ratio=0.25)).double().eval()
    x = rand(2, C, 4, 5, dtype=torch.float64)
    ref = torch.empty_like(x)
    for b in range(2):
        positions = [x[b, :, i, j] for i in range(4) for j in range(5)]
        logits = torch.stack([conv1x1(m.context_conv, p)[0] for p in positions])
        alpha = torch.exp(logits) / torch.exp(logits).sum()
        ctx = sum(a * p for a, p in zip(alpha, positions, strict=True))
        t1 = conv1x1(m.transform[0], ctx)
        ln = m.transform[1]
        t1 = (t1 - t1.mean()) / torch.sqrt(t1.var(unbiased=False) + ln.eps)
        t1 = t1 * ln.weight.flatten() + ln.bias.flatten()
        delta = conv1x1(m.transform[3], torch.relu(t1))
        ref[b] = x[b] + delta[:, None, None]
    torch.testing.assert_close(m(x), ref)


def test_gc_attention_map_and_mul_fusion() -> None:
    x = rand(2, C, 4, 5)
    m = GlobalContextBlock(C)
    alpha = m.attention_map(x)
    assert alpha.shape == (2, 1, 4, 5)
    torch.testing.assert_close(alpha.sum(dim=(1, 2, 3)), torch.ones(2))
    avg = GlobalContextBlock(C, pooling="avg")
    torch.testing.assert_close(avg.context(x), x.mean(dim=(2, 3), keepdim=True))
    mul = GlobalContextBlock(C, fusion="mul")
    torch.testing.assert_close(mul(x), 0.5 * x)  # sigmoid(0) gate at init
    assert GlobalContextBlock(12).hidden == 8  # round(12 / 16) floored at min_hidden
    assert GlobalContextBlock(256).hidden == 16
    assert GlobalContextBlock(4).hidden == 4  # never wider than C ...
    assert GlobalContextBlock(1).hidden == 2  # ... except that LayerNorm needs 2 units


def test_gc_small_channels_keep_context_gradient() -> None:
    # Regression: a 1-unit LayerNorm outputs a constant, so the context got no gradient.
    for channels in (1, 3, 12):
        m = randomise(GlobalContextBlock(channels))
        (m(rand(2, channels, 4, 5)) * rand(2, channels, 4, 5, seed=2)).sum().backward()
        assert m.context_conv.weight.grad.abs().sum() > 0, channels
