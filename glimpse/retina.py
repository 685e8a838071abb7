"""Batched foveated multi-scale glimpses (the "retina" of Mnih et al. 2014).

Mnih, Heess, Graves, Kavukcuoglu (2014), *Recurrent Models of Visual Attention*: a glimpse
at location ``l`` is ``k`` square patches centred at ``l``; the ``i``-th (``i = 0..k-1``)
covers ``g * s**i`` pixels per side and is reduced to ``g x g``.

Conventions (the one place they are written down):

- **Locations** are ``(x, y)`` in ``[-1, 1]``: ``(-1, -1)`` is the top-left corner of the
  top-left pixel and ``(1, 1)`` the bottom-right corner of the bottom-right pixel, exactly
  as ``torch.nn.functional.grid_sample(..., align_corners=False)``. ``x`` runs along the
  width, ``y`` along the height. :func:`loc_to_pixel` and :func:`pixel_to_loc` convert.
- **Pixels** are unit squares: pixel ``(row r, col c)`` covers ``[c, c+1] x [r, r+1]`` in
  continuous pixel coordinates, so the image spans ``[0, W] x [0, H]``. Pixels are square,
  so a patch is square in pixels also when ``H != W``.
- **Reduction is exact area averaging.** Output cell ``(v, u)`` of scale ``i`` is the mean of
  the image, seen as piecewise constant over its pixels, over the square
  ``[x0 + u*c, x0 + (u+1)*c] x [y0 + v*c, y0 + (v+1)*c]`` with cell side ``c = s**i`` and
  ``(x0, y0)`` the patch's top-left corner. When the patch is pixel-aligned and ``c`` is
  an integer, that is exactly ``avg_pool2d(crop, c)``. For sub-pixel locations or a
  non-integer ``s`` it is still exactly defined: a partly covered pixel contributes in
  proportion to the covered area (a box filter, unlike point-sampled bilinear
  interpolation, which aliases at coarse scales).
- **Outside the image** pixels read as zero: the mean is still taken over the whole cell
  area, so a cell half outside the image averages the inside half with zeros.

Implementation: area averaging over axis-aligned cells is separable, so every scale of
every image is two batched matrix products ``Wy @ img @ Wx^T`` with overlap-length weights
``W[u, x] = |[x, x+1] ∩ cell_u|`` -- one call for the whole batch and all scales, no Python
loop over the batch, exact in float32, and differentiable with respect to the image.

Prepared paths serve episodes that glimpse the same images many times: the images are
prepared once (``Retina.prepare``), after which each glimpse costs ``O(k g^2)`` lookups
instead of ``O(k g H W)``. Which preparation depends on the cell sides ``c = s**i``:

- **Integer cells** (any integer ``s``, or ``k = 1``) -- :class:`BoxPyramid`. Along one axis,
  the mean over ``[t, t + c]`` of the piecewise-constant image is ``A(t) = (F(t + c) -
  F(t)) / c`` with ``F`` the running integral, which is linear between integers; for an
  integer ``c`` the points ``t`` and ``t + c`` share their fractional part, so ``A`` itself
  is linear between integer ``t``. Hence a cell's exact area average is the *bilinear
  interpolation*, at the cell's top-left corner, of the stride-1 ``c x c`` box-filtered
  image sampled at integer corners (which is zero once the box leaves the image). The
  pyramid stores those box averages per scale (zero padded to one common size), and a
  glimpse is a single ``grid_sample(mode="bilinear", padding_mode="zeros",
  align_corners=True)`` over all images and scales at once. Float32 images agree with
  :func:`foveate` in float64 to ~1e-5 (grid_sample's float32 pixel coordinates), float64
  images to float64 rounding.
- **Other cells** -- :class:`IntegralImage`, a float64 summed-area table: the integral of
  the image is bilinear inside each pixel, so interpolating it at the cell corners is exact.

All paths agree with the loop reference (``tests/reference/retina.py``; tested).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from glimpse.checks import check_positive_int

__all__ = [
    "BoxPyramid",
    "IntegralImage",
    "Retina",
    "coarse_view",
    "foveate",
    "foveate_integral",
    "foveate_pyramid",
    "integer_cells",
    "loc_to_pixel",
    "patch_boxes",
    "pixel_to_loc",
]


def _check_loc(loc: Tensor, batch: int | None = None, name: str = "loc") -> None:
    """Shape, dtype and finiteness of ``(B, 2)`` locations (one device sync: the ``isfinite``
    check; the offending row is looked up only when it fails)."""
    if not isinstance(loc, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (B, 2), got {type(loc).__name__}")
    if loc.ndim != 2 or loc.shape[1] != 2:
        raise ValueError(f"{name} must have shape (B, 2) holding (x, y), got {tuple(loc.shape)}")
    if batch is not None and loc.shape[0] != batch:
        raise ValueError(f"{name} has {loc.shape[0]} rows but there are {batch} images")
    if not loc.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {loc.dtype}")
    if not bool(torch.isfinite(loc).all()):
        i = int((~torch.isfinite(loc)).any(1).nonzero()[0, 0])
        x, y = loc[i].tolist()
        raise ValueError(
            f"{name}[{i}] is ({x}, {y}); expected finite (x, y) "
            "(in [-1, 1] inside the image; beyond it reads zeros)"
        )


def loc_to_pixel(loc: Tensor, height: int, width: int) -> Tensor:
    """Map locations ``(x, y)`` in ``[-1, 1]`` to continuous pixel coordinates.

    ``(B, 2) -> (B, 2)`` holding ``(px, py)`` with ``px`` in ``[0, width]`` and ``py`` in
    ``[0, height]`` for in-range locations (values outside extrapolate linearly).
    ``(-1, -1) -> (0, 0)`` (top-left corner of the image), ``(0, 0) -> (W/2, H/2)``.
    """
    _check_loc(loc)
    return _to_pixel(loc, height, width)


def _to_pixel(loc: Tensor, height: int, width: int) -> Tensor:
    """:func:`loc_to_pixel` without the checks (for callers that made them)."""
    size = loc.new_tensor([width, height])
    return (loc + 1.0) * 0.5 * size


def pixel_to_loc(pix: Tensor, height: int, width: int) -> Tensor:
    """Inverse of :func:`loc_to_pixel`: pixel ``(px, py)`` to ``(x, y)`` in ``[-1, 1]``."""
    _check_loc(pix, name="pix")
    size = pix.new_tensor([width, height])
    return pix / size * 2.0 - 1.0


def _scale_sizes(glimpse_size: int, num_scales: int, scale_factor: float) -> list[float]:
    return [glimpse_size * scale_factor**i for i in range(num_scales)]


def patch_boxes(
    loc: Tensor,
    height: int,
    width: int,
    glimpse_size: int,
    num_scales: int = 1,
    scale_factor: float = 2.0,
) -> Tensor:
    """Pixel-space boxes ``(x0, y0, x1, y1)`` of every scale's patch: ``(B, 2) -> (B, k, 4)``.

    The ``i``-th box is the square of side ``glimpse_size * scale_factor**i`` centred at
    :func:`loc_to_pixel` ``(loc)``. Boxes may extend beyond the image.
    """
    _validate_params(glimpse_size, num_scales, scale_factor)
    _check_loc(loc)
    return _boxes(loc, height, width, glimpse_size, num_scales, scale_factor)


def _boxes(
    loc: Tensor, height: int, width: int, glimpse_size: int, num_scales: int, scale_factor: float
) -> Tensor:
    """:func:`patch_boxes` without the checks (for callers that made them)."""
    centre = _to_pixel(loc, height, width)  # (B, 2)
    half = loc.new_tensor(_scale_sizes(glimpse_size, num_scales, scale_factor)) / 2  # (k,)
    lo = centre[:, None, :] - half[None, :, None]
    hi = centre[:, None, :] + half[None, :, None]
    return torch.cat([lo, hi], dim=-1)


def _validate_params(glimpse_size: int, num_scales: int, scale_factor: float) -> None:
    check_positive_int("glimpse_size", glimpse_size)
    check_positive_int("num_scales", num_scales)
    if not (isinstance(scale_factor, (int, float)) and scale_factor > 0) or (
        num_scales > 1 and not scale_factor >= 1
    ):
        raise ValueError(
            f"scale_factor must be a real number >= 1 (> 0 with one scale), got {scale_factor!r}"
        )
    if isinstance(scale_factor, float) and not math.isfinite(scale_factor):  # inf, -inf
        raise ValueError(f"scale_factor must be a finite real number, got {scale_factor!r}")
    try:
        largest = glimpse_size * float(scale_factor) ** (num_scales - 1)
    except OverflowError:
        largest = math.inf
    if not math.isfinite(largest):
        raise ValueError(
            f"scale_factor={scale_factor!r} is too large for num_scales={num_scales}: the "
            f"largest patch side glimpse_size * scale_factor**{num_scales - 1} overflows"
        )


def _overlap_weights(lo: Tensor, cell: Tensor, glimpse_size: int, length: int) -> Tensor:
    """Overlap of each output cell with each pixel along one axis, divided by the cell side.

    ``lo``: ``(..., k)`` patch starts in pixels (any leading dims); ``cell``: ``(k,)`` cell
    sides. Returns ``(..., k, g, length)`` with entry ``|[p, p+1] ∩ cell_u| / c`` where
    ``cell_u = [lo + u*c, lo + (u+1)*c]``. Uses ``|[p, p+1] ∩ [a, b]| = R(b - p) - R(a - p)``
    with ``R = clamp(., 0, 1)``, evaluated once per cell edge (``g + 1`` of them).
    """
    u = torch.arange(glimpse_size + 1, device=lo.device, dtype=lo.dtype)
    edges = lo[..., None] + u * cell[:, None]  # (..., k, g+1)
    p = torch.arange(length, device=lo.device, dtype=lo.dtype)
    ramp = (edges[..., None] - p).clamp_(0, 1)  # (..., k, g+1, length)
    return (ramp[..., 1:, :] - ramp[..., :-1, :]).div_(cell[:, None, None])


def foveate(
    images: Tensor,
    loc: Tensor,
    glimpse_size: int,
    num_scales: int = 1,
    scale_factor: float = 2.0,
) -> Tensor:
    """Extract a foveated multi-scale glimpse for every image in the batch.

    Args:
        images: ``(B, C, H, W)`` floating-point images, any ``H``, ``W``, ``C``.
        loc: ``(B, 2)`` glimpse centres ``(x, y)`` in ``[-1, 1]`` (finite values outside
            are allowed; the patch then reads zeros; NaN or inf raise ``ValueError``).
        glimpse_size: ``g``, the side of every output patch.
        num_scales: ``k``, the number of patches.
        scale_factor: ``s``; patch ``i`` covers ``g * s**i`` pixels per side. Any finite
            real ``s >= 1`` (see the module docstring for the exact area-average definition).

    Returns:
        ``(B, k, C, g, g)`` glimpses on the device and in the dtype of ``images``.
    """
    _validate_params(glimpse_size, num_scales, scale_factor)
    _check_images(images)
    b, c, h, w = images.shape
    _check_loc(loc, b)
    if loc.device != images.device:
        raise ValueError(f"loc is on {loc.device} but images are on {images.device}")
    g, k = glimpse_size, num_scales
    # Geometry in float32 at least (bfloat16 pixel coordinates are too coarse).
    geo_dtype = torch.promote_types(images.dtype, torch.float32)
    cell = torch.tensor([scale_factor**i for i in range(k)], device=images.device, dtype=geo_dtype)
    lo = _boxes(loc.to(geo_dtype), h, w, g, k, scale_factor)[..., :2]  # (B, k, 2)
    # x and y weights in one go: (B, 2, k, g, max(H, W)).
    weights = _overlap_weights(lo.transpose(1, 2), cell, g, max(h, w)).to(images.dtype)
    wx, wy = weights[:, 0, ..., :w], weights[:, 1, ..., :h]
    # Rows first: (B, 1, k*g, H) @ (B, C, H, W) -> (B, C, k*g, W).
    rows = torch.matmul(wy.reshape(b, 1, k * g, h), images)
    # Then columns: (B, C, k, g, W) @ (B, 1, k, W, g) -> (B, C, k, g, g).
    out = torch.matmul(rows.view(b, c, k, g, w), wx.transpose(-1, -2).unsqueeze(1))
    return out.transpose(1, 2)


class IntegralImage:
    """Images prepared for many glimpses: a float64 summed-area table per image and channel.

    An episode takes ``T`` glimpses of the same image, so the glimpse-taking MDP prepares
    each image once (``O(HW)``) and then pays only ``O(k g^2)`` per glimpse: the integral
    of the piecewise-constant image, ``F(x, y) = ∫_0^y ∫_0^x I``, is bilinear inside each
    pixel, so bilinear interpolation of the table at any real ``(x, y)`` is exact, and a
    cell's area average is ``(F(x1, y1) - F(x0, y1) - F(x1, y0) + F(x0, y0)) / c^2``.
    Clamping ``(x, y)`` to ``[0, W] x [0, H]`` gives exactly the zero padding outside.
    The table is float64 so that differences of large sums keep float32 accuracy.

    Args:
        images: ``(B, C, H, W)`` floating-point images.
    """

    def __init__(self, images: Tensor) -> None:
        _check_images(images)
        b, c, h, w = images.shape
        sat = images.new_zeros(b, c, h + 1, w + 1, dtype=torch.float64)
        sat[:, :, 1:, 1:] = images.double().cumsum(2).cumsum(3)
        self.table = sat.view(b, c, (h + 1) * (w + 1))
        self.shape = (b, c, h, w)
        self.dtype = images.dtype
        self.device = images.device

    def __len__(self) -> int:
        return self.shape[0]

    def replace(self, index: Tensor, images: Tensor) -> None:
        """Re-prepare the slots ``index`` (``(n,)`` long or ``(B,)`` bool) with new images."""
        _check_replacement(self.shape, images)
        self.table.index_copy_(0, _slot_index(index, self.device), IntegralImage(images).table)

    def refill(self, images: Tensor) -> None:
        """Re-prepare every slot with new images ``(B, C, H, W)``, in place (a reset of the
        whole batch: :meth:`replace` without the index)."""
        _check_replacement(self.shape, images)
        if len(images) != len(self):
            raise ValueError(f"refill needs {len(self)} images, got {len(images)}")
        self.table.copy_(IntegralImage(images).table)

    def integral_at(self, px: Tensor, py: Tensor) -> Tensor:
        """``F`` at pixel coordinates ``px, py`` of shape ``(B, N)``: returns ``(B, C, N)``."""
        b, c, h, w = self.shape
        x = px.double().clamp(0, w)
        y = py.double().clamp(0, h)
        x0 = x.floor().clamp_(max=w - 1)
        y0 = y.floor().clamp_(max=h - 1)
        fx, fy = (x - x0).unsqueeze(1), (y - y0).unsqueeze(1)  # (B, 1, N)
        idx = (y0 * (w + 1) + x0).long().unsqueeze(1).expand(b, c, -1)
        t = self.table
        top = torch.lerp(t.gather(2, idx), t.gather(2, idx + 1), fx)
        bottom = torch.lerp(t.gather(2, idx + w + 1), t.gather(2, idx + w + 2), fx)
        return torch.lerp(top, bottom, fy)


def _check_images(images: Tensor) -> None:
    if not isinstance(images, Tensor) or images.ndim != 4:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images must be a (B, C, H, W) tensor, got {shape}")
    if not images.is_floating_point():
        raise ValueError(f"images must be floating point, got dtype {images.dtype}")


def _check_replacement(shape: tuple[int, int, int, int], images: Tensor) -> None:
    _check_images(images)
    _, c, h, w = shape
    if images.shape[1:] != (c, h, w):
        raise ValueError(
            f"replacement images must have shape (n, {c}, {h}, {w}), got {tuple(images.shape)}"
        )


def _slot_index(index: Tensor, device: torch.device) -> Tensor:
    """``(n,)`` long or ``(B,)`` bool slot selector as ``(n,)`` long indices."""
    index = torch.as_tensor(index, device=device)
    if index.dtype == torch.bool:
        return index.nonzero().flatten()
    return index.long().flatten()


@functools.lru_cache(maxsize=256)
def integer_cells(num_scales: int, scale_factor: float) -> tuple[int, ...] | None:
    """The cell sides ``s**i`` (``i < k``) as ints when all are integers, else ``None``."""
    cells = [scale_factor**i for i in range(num_scales)]
    if all(float(c).is_integer() for c in cells):
        return tuple(int(c) for c in cells)
    return None


_CHUNK_ELEMENTS = 1 << 20  # BoxPyramid builds this many table entries at a time (4 MB float32)


class BoxPyramid:
    """Images prepared for many glimpses with integer cell sides: per-scale box averages.

    For each cell side ``c`` in ``cells`` the table holds the mean of the ``c x c`` box whose
    top-left pixel corner is ``(t_x, t_y)``, for every integer ``t`` in ``[-p, W] x [-p, H]``
    (``p = max(cells) - 1``; boxes reaching outside the image read zeros there). A cell of
    side ``c`` at a real top-left corner is then exactly the bilinear interpolation of that
    table (module docstring), which :func:`foveate_pyramid` does with one ``grid_sample``.

    Built in ``O(k HW)``, in place in the table, a few images at a time so that the work
    stays in cache: box sums of side ``c * s`` are ``s`` shifted box sums of side ``c``
    along each axis (rows, then columns), so the sums stay small (at most ``c^2`` pixels)
    and are exact to the table's precision; every entry a shift would read beyond the
    table is a box wholly outside the image, i.e. zero, and is skipped. The table is
    float32 for float32 (and lower) images, float64 for float64 images.

    Args:
        images: ``(B, C, H, W)`` floating-point images.
        cells: increasing positive integer cell sides, each dividing the next, e.g.
            ``(1, 2, 4)`` for ``k = 3``, ``s = 2`` (see :func:`integer_cells`).

    Attributes:
        table: ``(B, k, C, H + p + 1, W + p + 1)`` box averages, ``table[..., j, i]``
            for the box with top-left corner ``(i - p, j - p)``.
    """

    def __init__(self, images: Tensor, cells: Sequence[int]) -> None:
        _check_images(images)
        cells = tuple(cells)
        if (
            not cells
            or any(not isinstance(c, int) or isinstance(c, bool) or c < 1 for c in cells)
            or list(cells) != sorted(cells)
        ):
            raise ValueError(f"cells must be increasing positive ints, got {cells!r}")
        if any(cells[i + 1] % cells[i] for i in range(len(cells) - 1)):
            raise ValueError(f"each cell side must divide the next, got {cells!r}")
        b, ch, h, w = images.shape
        p = cells[-1] - 1
        self.cells = cells
        self.shape = (b, ch, h, w)
        self.dtype = images.dtype
        self.device = images.device
        dtype = torch.promote_types(images.dtype, torch.float32)
        self.table = images.new_empty(b, len(cells), ch, h + p + 1, w + p + 1, dtype=dtype)
        self._build(images, None)

    def refill(self, images: Tensor) -> None:
        """Re-prepare every slot with new images ``(B, C, H, W)``, in place (a reset of the
        whole batch: :meth:`replace` without the index)."""
        _check_replacement(self.shape, images)
        if len(images) != len(self):
            raise ValueError(f"refill needs {len(self)} images, got {len(images)}")
        self._build(images.to(self.dtype), None)

    def __len__(self) -> int:
        return self.shape[0]

    def _one_location(self, k: int, g: int) -> tuple[np.ndarray, Tensor, Tensor]:
        """For glimpses of a one-image CPU pyramid: a ``(k, g, g, 2)`` sampling-grid buffer
        in the table's dtype, as numpy and as a tensor over the same memory (written, then
        read by ``grid_sample`` at once, so reusing it between calls is safe), and the
        table's first ``k`` scales as ``grid_sample``'s ``(k, C, H', W')`` input (a view:
        :meth:`replace` writes the table in place)."""
        cache = self.__dict__.setdefault("_one", {})
        if (k, g) not in cache:
            grid = torch.empty(k, g, g, 2, dtype=self.table.dtype)
            table = self.table[:, :k].reshape(k, *self.table.shape[2:])
            cache[k, g] = (grid.numpy().reshape(-1), grid, table)
        return cache[k, g]

    def replace(self, index: Tensor, images: Tensor) -> None:
        """Re-prepare the slots ``index`` (``(n,)`` long or ``(B,)`` bool) with new images.

        Only those slots are rebuilt, in place (all of them in order: straight into the
        table; otherwise a few at a time through a small buffer).
        """
        _check_replacement(self.shape, images)
        slots = _slot_index(index, self.device)
        if slots.numel() != images.shape[0]:
            raise ValueError(f"index selects {slots.numel()} slots for {images.shape[0]} images")
        in_order = slots.numel() == len(self) and bool(
            torch.equal(slots, torch.arange(len(self), device=self.device))
        )
        self._build(images.to(self.dtype), None if in_order else slots)

    def _build(self, images: Tensor, slots: Tensor | None) -> None:
        """Box averages of ``images`` into the table slots ``slots`` (``None``: all, in order)."""
        k, ch, hp, wp = self.table.shape[1:]
        _, _, h, w = self.shape
        p = self.cells[-1] - 1
        n = images.shape[0]
        step = max(1, _CHUNK_ELEMENTS // (k * ch * hp * wp))
        rows = self.table.new_empty(min(step, n), ch, hp, wp)  # row sums of one scale
        buffer = None if slots is None else self.table.new_empty(min(step, n), k, ch, hp, wp)
        for start in range(0, n, step):
            chunk = images[start : start + step]
            m = chunk.shape[0]
            out = self.table[start : start + m] if slots is None else buffer[:m]
            level = out[:, 0]  # level[..., j, i]: sum over the box with corner (i - p, j - p)
            level[..., :p, :].zero_()  # the zero border, then the image inside it
            level[..., p + h :, :].zero_()
            level[..., p : p + h, :p].zero_()
            level[..., p : p + h, p + w :].zero_()
            level[..., p : p + h, p : p + w] = chunk
            for i in range(1, k):
                c, factor = self.cells[i - 1], self.cells[i] // self.cells[i - 1]
                r = rows[:m]
                _shifted_sum(r, level, c, factor, 2)
                level = out[:, i]
                _shifted_sum(level, r, c, factor, 3)
            if k > 1:  # the means; cell 1 is already one (a contiguous op: fast on CPU)
                out[:, 1:].mul_(self._inv_area())
            if slots is not None:
                self.table.index_copy_(0, slots[start : start + m], out)

    def _inv_area(self) -> Tensor:
        inv = [1.0 / (c * c) for c in self.cells[1:]]
        return torch.tensor(inv, dtype=self.table.dtype, device=self.device).view(-1, 1, 1, 1)


def _shifted_sum(out: Tensor, x: Tensor, width: int, factor: int, dim: int) -> None:
    """``out[j] = x[j] + x[j + width] + ... + x[j + (factor - 1) * width]`` along ``dim``,
    summed left to right, the terms past the end of ``x`` left out (they are zero)."""
    size = x.shape[dim]
    if factor == 1 or width >= size:
        out.copy_(x)
        return
    n = size - width
    torch.add(x.narrow(dim, 0, n), x.narrow(dim, width, n), out=out.narrow(dim, 0, n))
    out.narrow(dim, n, width).copy_(x.narrow(dim, n, width))
    for m in range(2, factor):
        shift = m * width
        if shift < size:
            out.narrow(dim, 0, size - shift).add_(x.narrow(dim, shift, size - shift))


@functools.lru_cache(maxsize=64)
def _pyramid_geometry(
    g: int, k: int, s: float, h: int, w: int, p: int, device: torch.device
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Constants of :func:`foveate_pyramid`'s sampling grid, float64, computed once per
    configuration: the top-left corner of cell ``u`` of scale ``i`` as a table index is
    ``lo_i + p + u * c_i`` (``lo_i`` the box corner of :func:`patch_boxes`), mapped to
    ``align_corners=True`` grid coordinates ``2 * j / (size - 1) - 1``. Expanding
    ``lo_i = (loc + 1) / 2 * (W, H) - side_i / 2`` gives ``loc * scale + shift_i + offsets_iu``
    with ``scale`` ``(2,)``, ``shift`` ``(k, 2)`` and ``offsets`` ``(k, 2, g)``. The fourth
    constant, ``gather`` ``(k * g * g * 2,)`` long, lays the ``(k, 2, g)`` cell edges out as
    the ``(k, g, g, 2)`` grid: entry ``(i, v, u)`` is ``(x edge u, y edge v)`` of scale ``i``."""
    geo = torch.float64
    hp, wp = h + p + 1, w + p + 1
    size = torch.tensor([float(w), float(h)], dtype=geo)
    norm = torch.tensor([2.0 / (wp - 1), 2.0 / (hp - 1)], dtype=geo)
    half = torch.tensor(_scale_sizes(g, k, s), dtype=geo)[:, None] / 2  # (k, 1)
    scale = 0.5 * size * norm
    shift = (0.5 * size - half + p) * norm - 1.0
    cells = torch.tensor([s**i for i in range(k)], dtype=geo)[:, None, None]  # (k, 1, 1)
    offsets = cells * norm[None, :, None] * torch.arange(g, dtype=geo)  # (k, 2, g)
    i, v, u = torch.meshgrid(torch.arange(k), torch.arange(g), torch.arange(g), indexing="ij")
    gather = torch.stack([i * 2 * g + u, i * 2 * g + g + v], dim=-1).reshape(-1)
    return scale.to(device), shift.to(device), offsets.to(device), gather.to(device)


@functools.lru_cache(maxsize=64)
def _one_location_geometry(
    g: int, k: int, s: float, h: int, w: int, p: int
) -> tuple[list[float], list[list[float]], np.ndarray, np.ndarray]:
    """:func:`_pyramid_geometry` for one location on the CPU, laid out as the grid:
    ``scale`` and ``shift`` as Python floats, ``starts`` ``(k * g * g * 2,)`` long (which of
    the ``k * 2`` patch starts each grid entry adds to) and ``offsets`` ``(k * g * g * 2,)``
    float64 (its cell offset). Entry ``j`` of the grid is ``start[starts[j]] +
    offsets[j]``, the very sum :func:`_cell_edges` makes before the gather."""
    scale, shift, offsets, gather = _pyramid_geometry(g, k, s, h, w, p, torch.device("cpu"))
    starts = (gather // (2 * g) * 2 + gather % (2 * g) // g).numpy()
    return scale.tolist(), shift.tolist(), starts, offsets.reshape(-1)[gather].numpy()


def _cell_edges(loc: Tensor, scale: Tensor, shift: Tensor, offsets: Tensor) -> Tensor:
    """Grid coordinates of the cell edges, float64 ``(B, k, 2, g)``: ``loc * scale +
    shift_i + offsets_iu`` (:func:`_pyramid_geometry`) for ``(B, 2)`` float64 ``loc``, as
    separate IEEE operations in this order (no fused multiply-add), which the one-location
    path of :func:`_sample_pyramid` repeats on Python floats, bit for bit."""
    return (loc[:, None, :] * scale + shift)[..., None] + offsets


def foveate_pyramid(
    pyramid: BoxPyramid,
    loc: Tensor,
    glimpse_size: int,
    num_scales: int = 1,
    scale_factor: float = 2.0,
) -> Tensor:
    """:func:`foveate` from a :class:`BoxPyramid`: one ``grid_sample`` for all scales.

    The pyramid's first ``k`` cell sides must be ``s**i``. Returns ``(B, k, C, g, g)`` in
    the dtype of the images the pyramid was built from.
    """
    _validate_params(glimpse_size, num_scales, scale_factor)
    _check_loc(loc, pyramid.shape[0])
    if loc.device != pyramid.device:
        raise ValueError(f"loc is on {loc.device} but the images are on {pyramid.device}")
    g, k = glimpse_size, num_scales
    cells = integer_cells(k, scale_factor)
    if cells is None or pyramid.cells[:k] != cells:
        raise ValueError(
            f"the pyramid holds cell sides {pyramid.cells}, but k={k}, s={scale_factor:g} "
            f"needs {[scale_factor**i for i in range(k)]}"
        )
    return _sample_pyramid(pyramid, loc, g, k, scale_factor)


def _sample_pyramid(pyramid: BoxPyramid, loc: Tensor, g: int, k: int, s: float) -> Tensor:
    """:func:`foveate_pyramid` without the checks (for callers that made them)."""
    b, ch, h, w = pyramid.shape
    p = pyramid.cells[-1] - 1
    # The grid coordinates of the cell edges (float64, then the table's dtype), laid out as
    # the (B * k, g, g, 2) grid by one gather. One location on the CPU: on Python floats
    # and numpy, where these few small operations cost a fraction of torch's per-call
    # overhead.
    if b == 1 and loc.is_cpu and not loc.requires_grad:
        # _cell_edges on Python floats (the same IEEE double operations), gathered first.
        scale, shift, starts, offsets = _one_location_geometry(g, k, s, h, w, p)
        (x, y), (sx, sy) = loc.tolist()[0], scale
        start = np.array([v for dx, dy in shift for v in (x * sx + dx, y * sy + dy)])
        buffer, grid, table = pyramid._one_location(k, g)
        np.add(start[starts], offsets, out=buffer)  # rounded once to the table's dtype
    else:
        table = pyramid.table[:, :k] if k < len(pyramid.cells) else pyramid.table
        table = table.reshape(b * k, ch, *table.shape[-2:])
        scale, shift, offsets, gather = _pyramid_geometry(g, k, s, h, w, p, loc.device)
        edges = _cell_edges(loc.to(torch.float64), scale, shift, offsets).to(table.dtype)
        grid = edges.view(b, -1).index_select(1, gather).view(b * k, g, g, 2)
    out = F.grid_sample(
        table,
        grid,
        mode="bilinear",
        padding_mode="zeros",
        align_corners=True,
    )
    out = out.view(b, k, ch, g, g)
    return out if out.dtype == pyramid.dtype else out.to(pyramid.dtype)


def foveate_integral(
    integral: IntegralImage | BoxPyramid,
    loc: Tensor,
    glimpse_size: int,
    num_scales: int = 1,
    scale_factor: float = 2.0,
) -> Tensor:
    """:func:`foveate` from prepared images: same glimpses, ``O(k g^2)`` work per image.

    ``integral`` is what :meth:`Retina.prepare` returns: an :class:`IntegralImage` (any
    ``s``) or a :class:`BoxPyramid` (integer cells; see :func:`foveate_pyramid`).
    Returns ``(B, k, C, g, g)`` in the dtype of the images the table was built from.
    """
    if isinstance(integral, BoxPyramid):
        return foveate_pyramid(integral, loc, glimpse_size, num_scales, scale_factor)
    _validate_params(glimpse_size, num_scales, scale_factor)
    b, c, h, w = integral.shape
    _check_loc(loc, b)
    if loc.device != integral.device:
        raise ValueError(f"loc is on {loc.device} but the images are on {integral.device}")
    g, k = glimpse_size, num_scales
    boxes = _boxes(loc.double(), h, w, g, k, scale_factor)  # (B, k, 4)
    cell = torch.tensor([scale_factor**i for i in range(k)], device=loc.device).double()
    u = torch.arange(g + 1, device=loc.device, dtype=torch.float64)
    ex = boxes[..., 0, None] + u * cell[:, None]  # (B, k, g+1) cell edges along x
    ey = boxes[..., 1, None] + u * cell[:, None]
    px = ex[:, :, None, :].expand(b, k, g + 1, g + 1).reshape(b, -1)
    py = ey[:, :, :, None].expand(b, k, g + 1, g + 1).reshape(b, -1)
    f = integral.integral_at(px, py).view(b, c, k, g + 1, g + 1)
    sums = f[..., 1:, 1:] - f[..., :-1, 1:] - f[..., 1:, :-1] + f[..., :-1, :-1]
    out = sums / (cell * cell)[:, None, None]
    return out.transpose(1, 2).to(integral.dtype)


def coarse_view(images: Tensor, size: int) -> Tensor:
    """The whole image area-averaged onto a ``size x size`` grid: ``(B, C, size, size)``.

    Cells are square, of side ``max(H, W) / size`` pixels, centred on the image (a
    non-square image is padded with zeros on its short side). DRAM's context network
    (Ba et al. 2015) reads this coarse view. Needs ``1 <= size <= max(H, W)``.
    """
    _check_images(images)
    b, _, h, w = images.shape
    side = max(h, w)
    if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= side:
        raise ValueError(f"size must be an int in [1, {side}], got {size!r}")
    centre = images.new_zeros(b, 2, dtype=torch.promote_types(images.dtype, torch.float32))
    # Scale 1 of a two-scale glimpse of side ``size`` with factor side/size spans the image.
    return foveate(images, centre, size, 2, side / size)[:, 1]


@dataclass(frozen=True)
class Retina:
    """A configured glimpse sensor: ``g``, ``k`` and ``s`` fixed, called on images and locations.

    ``Retina(8)(images, loc)`` gives ``(B, 1, C, 8, 8)``; :meth:`flat` gives the
    ``(B, k*C*g*g)`` view used by MLP glimpse networks (RAM's ``rho(x, l)``).
    """

    glimpse_size: int = 8
    num_scales: int = 1
    scale_factor: float = 2.0

    def __post_init__(self) -> None:
        _validate_params(self.glimpse_size, self.num_scales, self.scale_factor)

    def __call__(self, images: Tensor | IntegralImage | BoxPyramid, loc: Tensor) -> Tensor:
        """``(B, C, H, W), (B, 2) -> (B, k, C, g, g)``; see :func:`foveate`.

        ``images`` may also be prepared images (see :meth:`prepare`): the same glimpses,
        much cheaper when the same images are glimpsed many times.
        """
        args = (loc, self.glimpse_size, self.num_scales, self.scale_factor)
        if isinstance(images, (IntegralImage, BoxPyramid)):
            return foveate_integral(images, *args)
        return foveate(images, *args)

    def sample(self, prepared: IntegralImage | BoxPyramid, loc: Tensor) -> Tensor:
        """:meth:`__call__` on prepared images for a caller that has checked ``loc``
        (finite ``(B, 2)`` floats on the images' device, ``B`` the number of images): the
        same glimpses ``(B, k, C, g, g)``, without re-checking on every call (the
        glimpse-taking MDP validates its actions once, then glimpses here)."""
        if isinstance(prepared, BoxPyramid):
            cells = integer_cells(self.num_scales, self.scale_factor)
            if cells is not None and prepared.cells[: self.num_scales] == cells:
                return _sample_pyramid(
                    prepared, loc, self.glimpse_size, self.num_scales, self.scale_factor
                )
        return self(prepared, loc)

    def prepare(self, images: Tensor) -> IntegralImage | BoxPyramid:
        """Prepare ``(B, C, H, W)`` images for repeated glimpses (an episode's ``T`` steps).

        A :class:`BoxPyramid` when every cell side ``s**i`` is an integer (the fast path),
        else an :class:`IntegralImage`. Both have ``replace(index, images)``.
        """
        cells = integer_cells(self.num_scales, self.scale_factor)
        if cells is None:
            return IntegralImage(images)
        return BoxPyramid(images, cells)

    def flat(self, images: Tensor | IntegralImage | BoxPyramid, loc: Tensor) -> Tensor:
        """``(B, C, H, W), (B, 2) -> (B, k*C*g*g)``, the flattened glimpse."""
        return self(images, loc).flatten(1)

    def output_shape(self, channels: int) -> tuple[int, int, int, int]:
        """Per-sample glimpse shape ``(k, C, g, g)``."""
        g = self.glimpse_size
        return (self.num_scales, channels, g, g)

    def boxes(self, loc: Tensor, height: int, width: int) -> Tensor:
        """Pixel boxes of every scale, ``(B, k, 4)``; see :func:`patch_boxes`."""
        return patch_boxes(
            loc, height, width, self.glimpse_size, self.num_scales, self.scale_factor
        )

    def pixels_seen(self, channels: int = 1) -> int:
        """Number of values one glimpse delivers: ``k * C * g * g``."""
        k, c, g, _ = self.output_shape(channels)
        return k * c * g * g
