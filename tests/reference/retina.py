"""Slow, obviously-correct retina reference: a Python loop over samples and scales.

For each sample and scale it zero-pads the image, crops the patch, and average-pools it.
Sub-pixel positions and non-integer cell sides are handled by nearest-neighbour
supersampling by an integer factor ``q`` first: when every patch edge lies on the
``1/q``-pixel grid, area averaging of the original image equals plain block averaging
of the supersampled one. Used by the tests and by ``benchmarks/bench_retina.py``.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor


def naive_foveate(
    images: Tensor,
    loc: Tensor,
    glimpse_size: int,
    num_scales: int = 1,
    scale_factor: float = 2.0,
    supersample: int = 1,
) -> Tensor:
    """``(B, C, H, W), (B, 2) -> (B, k, C, g, g)`` by loops; exact on the 1/q grid."""
    q = supersample
    b, c, h, w = images.shape
    g = glimpse_size
    out = images.new_zeros(b, num_scales, c, g, g)
    for n in range(b):
        img = images[n]
        if q > 1:
            img = img.repeat_interleave(q, dim=1).repeat_interleave(q, dim=2)
        px = (loc[n, 0].item() + 1) / 2 * w * q
        py = (loc[n, 1].item() + 1) / 2 * h * q
        for i in range(num_scales):
            cell = scale_factor**i * q  # cell side in supersampled pixels
            side = g * cell
            x0, y0 = px - side / 2, py - side / 2
            cell_i, x0_i, y0_i = round(cell), round(x0), round(y0)
            if not (
                math.isclose(cell, cell_i, abs_tol=1e-3)
                and math.isclose(x0, x0_i, abs_tol=1e-3)
                and math.isclose(y0, y0_i, abs_tol=1e-3)
            ):
                raise ValueError("patch not on the supersampling grid; raise supersample")
            side_i = g * cell_i
            pad = side_i + abs(x0_i) + abs(y0_i) + 1
            padded = F.pad(img, (pad, pad, pad, pad))
            crop = padded[:, y0_i + pad : y0_i + pad + side_i, x0_i + pad : x0_i + pad + side_i]
            out[n, i] = F.avg_pool2d(crop[None], cell_i)[0]
    return out
