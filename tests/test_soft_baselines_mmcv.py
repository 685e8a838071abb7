"""Glimpse's non-local and GC blocks against mmcv-lite's bricks (skipped without mmcv).

mmcv-lite is optional (it needs mmengine and OpenCV); install it in a separate
environment that shares the project's torch and numpy to run these, e.g.
``python -m venv --system-site-packages /tmp/mm && /tmp/mm/bin/pip install mmcv-lite
mmengine && /tmp/mm/bin/python -m pytest tests/test_soft_baselines_mmcv.py``. mmcv's
``GeneralizedAttention`` has no Glimpse counterpart and is not compared.
"""

from __future__ import annotations

import pytest
import torch

from soft_baselines import create
from soft_baselines.nonlocal_block import PAIRWISE_FUNCTIONS

pytest.importorskip("mmcv.cnn.bricks")
from tests.helpers.soft import rand, randomise
from tests.reference.mmcv_blocks import to_mmcv_context_block, to_mmcv_nonlocal

TOL = {"rtol": 1e-10, "atol": 1e-12}


def _same(ours, theirs, x, backward: bool = True):
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = ours(xa), theirs(xb)
    torch.testing.assert_close(ya, yb, **TOL)
    if not backward:
        return
    w = rand(*ya.shape, seed=5)
    (ya * w).sum().backward()
    (yb * w).sum().backward()
    torch.testing.assert_close(xa.grad, xb.grad, **TOL)


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("sub_sample", [False, True])
@pytest.mark.parametrize("pairwise", PAIRWISE_FUNCTIONS)
def test_nonlocal_matches_mmcv(pairwise: str, sub_sample: bool, train: bool):
    torch.manual_seed(0)
    ours = randomise(create("nonlocal", 8, pairwise=pairwise, sub_sample=sub_sample), 0, 0.3)
    ours.train(train)
    theirs = to_mmcv_nonlocal(ours)
    # mmcv-lite 2.2.0's concatenation form divides its ReLU output in place, so autograd
    # cannot backpropagate through it: outputs only there.
    backward = pairwise != "concatenation"
    _same(ours, theirs, rand(2, 8, 4, 6), backward)  # even sizes: both pool 2x2 the same


@pytest.mark.parametrize("fusion", ["add", "mul"])
@pytest.mark.parametrize("pooling", ["att", "avg"])
def test_gc_matches_mmcv_context_block(pooling: str, fusion: str):
    torch.manual_seed(0)
    ours = randomise(create("gc", 32, ratio=1 / 4, pooling=pooling, fusion=fusion))
    _same(ours, to_mmcv_context_block(ours), rand(2, 32, 5, 3))
