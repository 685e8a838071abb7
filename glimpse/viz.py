"""Drawing glimpse trajectories: frames, tiled episodes, GIFs and TensorBoard playback.

The env's ``render()`` and every agent's playback (TensorBoard during training, GIF/MP4
export afterwards) go through this module: an agent hands :func:`render_fixations` the
images, its fixations and its predictions; no env is needed.

Frames
    :func:`render_trajectory` turns one image and its fixations ``(T, 2)`` into ``T`` RGB
    ``uint8`` frames ``(T, H*u, W*u, 3)``. Frame ``t`` (``t = 0..T-1``) shows

    - the image, nearest-neighbour upscaled by an integer ``u``;
    - the path: a polyline through fixations ``0..t`` with a dot at each fixation;
    - one outline per scale for the *current* fixation ``t``, exactly where
      :mod:`glimpse.retina` reads (the boxes come from :func:`glimpse.retina.patch_boxes`);
      all scales share one hue, coarser scales fading towards white;
    - the step number ``"t=3"`` (zero-based, the index into ``locations``) top left;
    - an optional caption bottom left: ``"y=<label>"`` on every frame, and, once the
      prediction is shown, ``"y=<label> p=<prediction>"`` in green when they agree and red
      when not. A scalar ``prediction`` is shown on the last frame only (the agent predicts
      at the end of the episode); a per-step ``prediction`` of length ``T`` is shown on
      every frame.

Box convention
    A retina box ``[x0, x1] x [y0, y1]`` in continuous pixel coordinates (the image spans
    ``[0, W] x [0, H]``, see :mod:`glimpse.retina`) becomes canvas edges
    ``X = round(x * u)`` (halves round up). The box then covers canvas columns
    ``X0 .. X1 - 1`` and rows ``Y0 .. Y1 - 1``, and the outline is drawn on the outermost
    ``line_width`` pixels *inside* that region: e.g. image pixels ``10..18`` at ``u = 4``
    give outline columns ``40`` and ``71``. Outline pixels therefore always lie on pixels
    the retina reads. The part of a box outside the canvas is not drawn (a box edge outside
    the image is simply absent); a box wholly outside leaves no mark.

Colours (override any through ``colors=``): see :data:`DEFAULT_COLORS` and
:func:`box_colors`. Saturated hues are used so that overlays never coincide with a grey
level of a grayscale image, and nothing is antialiased, so every overlay pixel has exactly
its colour. Drawing order: path and dots, then boxes (coarsest first), then text.

Files and TensorBoard
    :func:`save_gif` writes an animated GIF atomically; :func:`log_trajectories` writes an
    animated summary plus per-step frames (tag layout documented there).
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from glimpse.attention import footprint_map
from glimpse.checks import check_positive_int
from glimpse.io import atomic_write
from glimpse.retina import patch_boxes

__all__ = [
    "DEFAULT_COLORS",
    "MIN_SHORT_SIDE",
    "TENSORBOARD_IMAGE_WIDTH",
    "box_colors",
    "default_upscale",
    "frames_to_video_tensor",
    "log_trajectories",
    "overlay_map",
    "render_batch",
    "render_fixations",
    "render_trajectory",
    "save_gif",
    "tensorboard_ncols",
    "tile_frames",
]

Color = tuple[int, int, int]

#: Default overlay colours (RGB). ``"box"`` is the finest scale's outline; coarser scales
#: fade towards white unless ``"boxes"`` (one colour per scale) is given.
DEFAULT_COLORS: dict[str, Color] = {
    "box": (255, 48, 48),
    "path": (0, 200, 255),
    "dot": (255, 0, 255),
    "text": (255, 255, 0),
    "text_bg": (0, 0, 0),
    "correct": (0, 230, 0),
    "wrong": (255, 0, 0),
}
_COLOR_KEYS = (*DEFAULT_COLORS, "boxes")

#: The default upscale makes the image's short side at least this many pixels.
MIN_SHORT_SIDE = 112

#: CSS pixels: TensorBoard's Images dashboard scales a wider image down to this width (its
#: card's; measured in Chromium by tests/test_glimpse_experiments_playback_browser.py). A
#: row of four upscaled 28x28 frames (458 px) was shown 350 px wide, each frame ~87 px.
TENSORBOARD_IMAGE_WIDTH = 350

# How far the coarsest scale's outline is blended towards white (0 = no fading).
_FADE = 0.6


# --------------------------------------------------------------------------- validation


def _to_numpy(x: Any) -> np.ndarray:
    if isinstance(x, Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _image_to_rgb_uint8(image: Tensor | np.ndarray) -> np.ndarray:
    """``(C, H, W)`` (``C`` in {1, 3}) or ``(H, W)``, float or uint8 -> ``(H, W, 3)`` uint8."""
    arr = _to_numpy(image)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[0] not in (1, 3) or arr.shape[1] < 1 or arr.shape[2] < 1:
        raise ValueError(
            f"image must have shape (C, H, W) with C in {{1, 3}} or (H, W), got {arr.shape}"
            " (channels-last images must be transposed to (C, H, W))"
        )
    if arr.dtype == np.uint8:
        out = arr
    elif arr.dtype == np.bool_ or np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float64)
        if not np.isfinite(arr).all():
            raise ValueError("image holds non-finite values; expected floats in [0, 1]")
        out = np.floor(np.clip(arr, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    else:
        raise ValueError(f"image must be float in [0, 1] or uint8, got dtype {arr.dtype}")
    out = np.moveaxis(out, 0, -1)  # (H, W, C)
    if out.shape[-1] == 1:
        out = np.repeat(out, 3, axis=-1)
    return np.ascontiguousarray(out)


def _check_locations(locations: Tensor | np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    loc = _to_numpy(locations)
    if loc.ndim != 2 or loc.shape[1] != 2:
        raise ValueError(f"locations must have shape (T, 2) holding (x, y), got {loc.shape}")
    if loc.shape[0] == 0:
        raise ValueError("locations is empty (T = 0); expected at least one fixation")
    if not (np.issubdtype(loc.dtype, np.floating) or np.issubdtype(loc.dtype, np.integer)):
        raise ValueError(f"locations must be real numbers, got dtype {loc.dtype}")
    loc = loc.astype(np.float64)
    bad = ~np.isfinite(loc)
    if bad.any():
        t = int(np.argwhere(bad)[0, 0])
        raise ValueError(
            f"locations must be finite (x, y) in [-1, 1]; step {t} is {loc[t].tolist()}"
        )
    return loc


def _check_frames(frames: Any) -> np.ndarray:
    arr = _to_numpy(frames)
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3 or 0 in arr.shape:
        raise ValueError(
            "frames must be a non-empty uint8 array of shape (T, H, W, 3), "
            f"got shape {arr.shape} and dtype {arr.dtype}"
        )
    return arr


def _check_color(name: str, value: Any) -> Color:
    try:
        rgb = tuple(int(v) for v in value)
    except TypeError:
        rgb = ()
    if len(rgb) != 3 or not all(0 <= v <= 255 for v in rgb):
        raise ValueError(f"colors[{name!r}] must be an (r, g, b) triple in 0..255, got {value!r}")
    return rgb  # type: ignore[return-value]


def _resolve_colors(
    colors: Mapping[str, Any] | None, num_scales: int
) -> tuple[dict[str, Color], list[Color]]:
    """Merge ``colors`` into the defaults; returns the named colours and one per scale."""
    merged = dict(DEFAULT_COLORS)
    per_scale: list[Color] | None = None
    for key, value in (colors or {}).items():
        if key not in _COLOR_KEYS:
            raise ValueError(f"unknown colour key {key!r}; valid keys: {', '.join(_COLOR_KEYS)}")
        if key == "boxes":
            per_scale = [_check_color(f"boxes[{i}]", c) for i, c in enumerate(value)]
            if len(per_scale) != num_scales:
                raise ValueError(
                    f"colors['boxes'] needs one colour per scale ({num_scales}), "
                    f"got {len(per_scale)}"
                )
        else:
            merged[key] = _check_color(key, value)
    if per_scale is None:
        base = np.array(merged["box"], dtype=np.float64)
        per_scale = []
        for i in range(num_scales):
            f = _FADE * i / (num_scales - 1) if num_scales > 1 else 0.0
            rgb = np.floor(base + (255.0 - base) * f + 0.5).astype(int)
            per_scale.append((int(rgb[0]), int(rgb[1]), int(rgb[2])))
    return merged, per_scale


def box_colors(num_scales: int, colors: Mapping[str, Any] | None = None) -> list[Color]:
    """The outline colour of each of ``num_scales`` scales, finest first, under ``colors``."""
    return _resolve_colors(colors, check_positive_int("num_scales", num_scales))[1]


def tensorboard_ncols(height: int, width: int, upscale: int | None = None, pad: int = 2) -> int:
    """Images per row (at least 1) so that a row of ``height x width`` images upscaled by
    ``upscale`` (default :func:`default_upscale`) and tiled with ``pad`` pixels fits
    :data:`TENSORBOARD_IMAGE_WIDTH`: TensorBoard then shows every image at its full
    upscaled size (28x28 MNIST: 3 per row of 112-pixel frames; 60x60: 2; 100x100: 1).
    The trainers' TensorBoard images are tiled with it."""
    u = (
        default_upscale(height, width)
        if upscale is None
        else check_positive_int("upscale", upscale)
    )
    return max(1, (TENSORBOARD_IMAGE_WIDTH - pad) // (width * u + pad))


def default_upscale(height: int, width: int) -> int:
    """Smallest integer ``u >= 1`` with ``min(height, width) * u >= MIN_SHORT_SIDE`` (112).

    28x28 MNIST -> 4, 60x60 cluttered MNIST -> 2, 224-pixel images -> 1.
    """
    return max(1, math.ceil(MIN_SHORT_SIDE / max(1, min(height, width))))


# --------------------------------------------------------------------------- drawing


@lru_cache(maxsize=16)
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """PIL's default font at ``size`` pixels (the fixed bitmap font without FreeType)."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # pragma: no cover - Pillow without FreeType
        return ImageFont.load_default()


def _round_half_up(x: float) -> int:
    return math.floor(x + 0.5)


def _draw_box(canvas: np.ndarray, box: Sequence[float], color: Color, width: int) -> None:
    """Outline the canvas-pixel box ``(x0, y0, x1, y1)`` (continuous, edges) in place.

    The outline is the ``width`` outermost pixel rows/columns inside the box; whatever
    falls outside the canvas is dropped.
    """
    h, w = canvas.shape[:2]
    c0, r0, c1, r1 = (_round_half_up(v) for v in box)
    if c1 <= c0 or r1 <= r0:
        return
    bands = (
        (r0, min(r0 + width, r1), c0, c1),  # top
        (max(r1 - width, r0), r1, c0, c1),  # bottom
        (r0, r1, c0, min(c0 + width, c1)),  # left
        (r0, r1, max(c1 - width, c0), c1),  # right
    )
    for ra, rb, ca, cb in bands:
        ra, rb, ca, cb = max(ra, 0), min(rb, h), max(ca, 0), min(cb, w)
        if ra < rb and ca < cb:
            canvas[ra:rb, ca:cb] = color


def _draw_text(
    draw: ImageDraw.ImageDraw,
    xy: tuple[int, int],
    text: str,
    font: Any,
    color: Color,
    bg: Color,
    anchor_bottom: bool = False,
) -> None:
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    x, y = xy
    if anchor_bottom:
        y = y - bottom - 1
    draw.rectangle((x + left - 1, y + top - 1, x + right, y + bottom), fill=bg)
    draw.text((x, y), text, fill=color, font=font)


def _scalar(value: Any) -> Any:
    if isinstance(value, (Tensor, np.ndarray, np.generic)):
        arr = _to_numpy(value)
        if arr.size != 1:
            raise ValueError(f"expected a scalar label/prediction, got shape {arr.shape}")
        return arr.reshape(()).item()
    return value


def _per_step_predictions(prediction: Any, steps: int) -> list[Any]:
    """``None`` / scalar / length-``T`` sequence -> one entry per frame (``None`` = not shown)."""
    if prediction is None:
        return [None] * steps
    if isinstance(prediction, (Tensor, np.ndarray)):
        seq = list(_to_numpy(prediction).reshape(-1)) if prediction.ndim > 0 else None
    elif isinstance(prediction, Sequence) and not isinstance(prediction, str):
        seq = list(prediction)
    else:
        seq = None
    if seq is None:
        return [None] * (steps - 1) + [_scalar(prediction)]
    if len(seq) != steps:
        raise ValueError(
            f"prediction must be a scalar or have one entry per step ({steps}), got {len(seq)}"
        )
    return [_scalar(p) for p in seq]


def render_trajectory(
    image: Tensor | np.ndarray,
    locations: Tensor | np.ndarray | Sequence[Sequence[float]],
    glimpse_size: int,
    num_scales: int = 1,
    scale_factor: float = 2.0,
    *,
    upscale: int | None = None,
    label: int | str | Tensor | None = None,
    prediction: int | str | Tensor | np.ndarray | Sequence[int | str] | None = None,
    colors: Mapping[str, Any] | None = None,
    show_path: bool = True,
    show_step: bool = True,
    line_width: int | None = None,
    footprint: bool = False,
    footprint_color: Sequence[int] = (255, 140, 0),
) -> np.ndarray:
    """Render one glimpse trajectory as ``T`` RGB frames (see the module docstring).

    Args:
        image: ``(C, H, W)`` with ``C`` in {1, 3}, or ``(H, W)``; a torch tensor or numpy
            array, float in ``[0, 1]`` (clipped; rounded to ``uint8``) or ``uint8``.
            Grayscale is repeated to RGB. Any ``H != W``.
        locations: ``(T, 2)`` fixations ``(x, y)`` in ``[-1, 1]``, the retina's convention
            (values outside are allowed: the boxes are then clipped or absent). ``T >= 1``.
        glimpse_size, num_scales, scale_factor: the retina's ``g``, ``k``, ``s``; box ``i``
            has side ``g * s**i`` image pixels.
        upscale: integer nearest-neighbour factor ``u``; default :func:`default_upscale`
            (the smallest making the short side at least 112 pixels).
        label: true class, shown as ``"y=<label>"`` on every frame.
        prediction: a scalar (shown on the last frame) or one entry per step (shown on every
            frame), as ``"p=<prediction>"``; green when equal to ``label``, red when not
            (the text colour without a label).
        colors: overrides of :data:`DEFAULT_COLORS` (keys ``box``, ``path``, ``dot``,
            ``text``, ``text_bg``, ``correct``, ``wrong``), or ``boxes``: one colour per scale.
        show_path: draw the polyline and dots through fixations ``0..t``.
        show_step: draw ``"t=<t>"`` in the top-left corner.
        line_width: outline and path width in canvas pixels; default
            ``max(1, short_side // 112)`` of the upscaled canvas.
        footprint: tint frame ``t`` with the attention map of fixations ``0..t``
            (:func:`glimpse.attention.footprint_map`, finest scale): each pixel is blended
            towards ``footprint_color`` by ``0.6 * map / max(map)``, under the outlines.

    Returns:
        ``(T, H*u, W*u, 3)`` ``uint8`` frames.

    Raises:
        ValueError: bad image shape/dtype, ``locations`` not ``(T, 2)``, ``T = 0``,
            non-finite locations, bad retina parameters, upscale, colours or predictions.
    """
    rgb = _image_to_rgb_uint8(image)
    loc = _check_locations(locations)
    h, w = rgb.shape[:2]
    u = default_upscale(h, w) if upscale is None else check_positive_int("upscale", upscale)
    steps = loc.shape[0]
    named, scale_colors = _resolve_colors(colors, num_scales)
    # Validates glimpse_size / num_scales / scale_factor as the retina does.
    boxes = patch_boxes(torch.from_numpy(loc), h, w, glimpse_size, num_scales, scale_factor)
    boxes = boxes.numpy() * u  # (T, k, 4) canvas coordinates (edges)
    preds = _per_step_predictions(prediction, steps)
    label = _scalar(label)

    base = np.repeat(np.repeat(rgb, u, axis=0), u, axis=1)
    tints = None
    if footprint:
        loc64 = torch.from_numpy(loc).double()
        tints = [
            overlay_map(
                rgb.transpose(2, 0, 1),
                footprint_map(loc64[None, : t + 1], h, w, glimpse_size)[0],
                u,
                footprint_color,
            )
            for t in range(steps)
        ]
    ch, cw = base.shape[:2]
    short = min(ch, cw)
    lw = max(1, short // MIN_SHORT_SIDE) if line_width is None else line_width
    lw = check_positive_int("line_width", lw)
    radius = max(2, lw + 1)
    font = _font(max(10, short // 12))
    # Fixation centres in PIL's pixel-index coordinates (pixel i spans edges [i, i+1]).
    centres = (loc + 1.0) * 0.5 * np.array([w, h]) * u - 0.5

    frames = np.empty((steps, ch, cw, 3), dtype=np.uint8)
    for t in range(steps):
        im = Image.fromarray(base if tints is None else tints[t])
        if show_path:
            draw = ImageDraw.Draw(im)
            pts = [(float(x), float(y)) for x, y in centres[: t + 1]]
            if len(pts) > 1:
                draw.line(pts, fill=named["path"], width=lw)
            for x, y in pts:
                draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=named["dot"])
        canvas = np.array(im)
        for i in reversed(range(num_scales)):  # finest scale on top
            _draw_box(canvas, boxes[t, i], scale_colors[i], lw)
        if show_step or label is not None or preds[t] is not None:
            im = Image.fromarray(canvas)
            draw = ImageDraw.Draw(im)
            draw.fontmode = "1"  # no antialiasing: text pixels are exactly the text colour
            if show_step:
                _draw_text(draw, (1, 1), f"t={t}", font, named["text"], named["text_bg"])
            caption, color = _caption(label, preds[t], named)
            if caption:
                _draw_text(draw, (1, ch), caption, font, color, named["text_bg"], True)
            canvas = np.asarray(im)
        frames[t] = canvas
    return frames


def overlay_map(
    image: Tensor | np.ndarray,
    attention: Tensor | np.ndarray,
    upscale: int | None = None,
    color: Sequence[int] = (255, 140, 0),
    strength: float = 0.6,
) -> np.ndarray:
    """An attention map drawn over its image: ``(H*u, W*u, 3)`` uint8.

    ``image`` as in :func:`render_trajectory`; ``attention`` ``(H, W)`` non-negative (e.g.
    :mod:`glimpse.attention`'s maps). Each pixel is blended towards ``color`` by
    ``strength * attention / max(attention)`` (a zero map leaves the image as it is), then
    upscaled by ``u`` (default :func:`default_upscale`) with nearest neighbours.
    """
    rgb = _image_to_rgb_uint8(image)
    h, w = rgb.shape[:2]
    m = np.asarray(_to_numpy(attention), dtype=np.float64)
    if m.shape != (h, w) or not np.isfinite(m).all() or (m < 0).any():
        raise ValueError(f"attention must be a finite non-negative ({h}, {w}) map, got {m.shape}")
    u = default_upscale(h, w) if upscale is None else check_positive_int("upscale", upscale)
    tint = np.asarray(_check_color("color", color), dtype=np.float64)
    alpha = (strength * m / max(float(m.max()), 1e-300))[..., None]
    out = np.rint(rgb * (1 - alpha) + tint * alpha).astype(np.uint8)
    return np.repeat(np.repeat(out, u, axis=0), u, axis=1)


def _caption(label: Any, pred: Any, named: Mapping[str, Color]) -> tuple[str, Color]:
    if pred is None:
        return ("" if label is None else f"y={label}"), named["text"]
    if label is None:
        return f"p={pred}", named["text"]
    return f"y={label} p={pred}", named["correct" if pred == label else "wrong"]


# --------------------------------------------------------------------------- tiling


def tile_frames(
    sequences: Sequence[np.ndarray] | np.ndarray,
    ncols: int | None = None,
    pad: int = 2,
    pad_value: int = 255,
) -> np.ndarray:
    """Tile ``N`` frame sequences into one grid sequence ``(T_max, H'', W'', 3)``.

    Args:
        sequences: ``N`` uint8 arrays ``(T_i, H_i, W_i, 3)`` or one ``(N, T, H, W, 3)`` array.
            Episodes shorter than ``T_max`` hold their last frame; smaller frames are placed
            top-left in a cell of the largest size.
        ncols: episodes per row; default ``min(N, 8)``.
        pad: pixels between cells and around the grid.
        pad_value: grey level of the padding.

    Returns:
        ``(T_max, rows*(H+pad)+pad, ncols*(W+pad)+pad, 3)`` uint8, row-major order.
    """
    seqs = [_check_frames(s) for s in sequences]
    if not seqs:
        raise ValueError("tile_frames needs at least one frame sequence, got 0")
    n = len(seqs)
    ncols = min(n, 8) if ncols is None else check_positive_int("ncols", ncols)
    if not isinstance(pad, (int, np.integer)) or pad < 0:
        raise ValueError(f"pad must be a non-negative int, got {pad!r}")
    nrows = math.ceil(n / ncols)
    steps = max(s.shape[0] for s in seqs)
    ch = max(s.shape[1] for s in seqs)
    cw = max(s.shape[2] for s in seqs)
    out = np.full(
        (steps, nrows * (ch + pad) + pad, ncols * (cw + pad) + pad, 3), pad_value, np.uint8
    )
    for i, s in enumerate(seqs):
        r, c = divmod(i, ncols)
        y, x = pad + r * (ch + pad), pad + c * (cw + pad)
        t = s.shape[0]
        out[:t, y : y + s.shape[1], x : x + s.shape[2]] = s
        out[t:, y : y + s.shape[1], x : x + s.shape[2]] = s[-1]
    return out


def render_batch(
    images: Tensor | np.ndarray | Sequence[Tensor | np.ndarray],
    locations: Tensor | np.ndarray | Sequence[Tensor | np.ndarray],
    glimpse_size: int,
    num_scales: int = 1,
    scale_factor: float = 2.0,
    *,
    labels: Sequence[Any] | Tensor | np.ndarray | None = None,
    predictions: Sequence[Any] | Tensor | np.ndarray | None = None,
    ncols: int | None = None,
    pad: int = 2,
    **render_kwargs: Any,
) -> np.ndarray:
    """Render ``N`` episodes and tile them side by side: ``(T_max, H'', W'', 3)`` uint8.

    Args:
        images: ``(N, C, H, W)`` or ``(N, H, W)``, or a sequence of ``N`` single images.
        locations: ``(N, T, 2)``, or a sequence of ``N`` arrays ``(T_i, 2)`` (episodes may
            differ in length; finished ones hold their last frame).
        glimpse_size, num_scales, scale_factor: as in :func:`render_trajectory`.
        labels: ``N`` labels (or ``None``).
        predictions: ``N`` entries, each a scalar or per-step sequence (``(N,)`` or
            ``(N, T)`` arrays work), or ``None``.
        ncols, pad: grid layout, see :func:`tile_frames`.
        **render_kwargs: passed to :func:`render_trajectory` (``upscale``, ``colors``,
            ``show_path``, ``show_step``, ``line_width``). With ``upscale=None`` each
            episode gets its own default upscale.
    """
    n_img, n_loc = len(images), len(locations)
    if n_img != n_loc or n_img == 0:
        raise ValueError(
            f"images and locations must hold the same number N >= 1 of episodes, "
            f"got {n_img} images and {n_loc} location sequences"
        )
    for name, seq in (("labels", labels), ("predictions", predictions)):
        if seq is not None and len(seq) != n_img:
            raise ValueError(f"{name} must have one entry per episode ({n_img}), got {len(seq)}")
    sequences = [
        render_trajectory(
            images[i],
            locations[i],
            glimpse_size,
            num_scales,
            scale_factor,
            label=None if labels is None else labels[i],
            prediction=None if predictions is None else predictions[i],
            **render_kwargs,
        )
        for i in range(n_img)
    ]
    return tile_frames(sequences, ncols=ncols, pad=pad)


def _target_captions(values: Any, n: int, name: str) -> list[Any] | None:
    """``(n,)`` or ``(n, L)`` labels/predictions -> ``n`` captions: the value itself for one
    target (``L = 1``), ``"3 7"`` for a sequence of ``L > 1`` targets."""
    if values is None:
        return None
    arr = _to_numpy(values)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},) or ({n}, L), got {arr.shape}")
    if arr.shape[1] == 1:
        return arr[:, 0].tolist()
    return [" ".join(map(str, row)) for row in arr.tolist()]


def render_fixations(
    images: Tensor | np.ndarray,
    fixations: Tensor | np.ndarray,
    glimpse_size: int,
    num_scales: int = 1,
    scale_factor: float = 2.0,
    *,
    labels: Tensor | np.ndarray | Sequence[int] | None = None,
    predictions: Tensor | np.ndarray | Sequence[int] | None = None,
    ncols: int | None = None,
    **render_kwargs: Any,
) -> np.ndarray:
    """The one playback renderer: ``N`` episodes, given as their fixations and predictions,
    drawn tiled side by side: ``(T, H'', W'', 3)`` uint8 frames.

    Every agent's playback (TensorBoard during training, GIF/MP4 export afterwards) comes
    here with what its own rollout produced; no env is needed.

    Args:
        images: ``(N, C, H, W)`` (or ``(N, H, W)``) images, float in ``[0, 1]`` or uint8,
            on any device.
        fixations: ``(N, T, 2)`` glimpse centres ``(x, y)`` in ``[-1, 1]`` in the order
            taken, or ``(N, S, K, 2)`` (``K`` parts per step: drawn one part per frame,
            ``T = S * K``).
        glimpse_size, num_scales, scale_factor: the retina's ``g``, ``k``, ``s``.
        labels: ``(N,)`` or ``(N, L)`` true labels, captioned ``"y=<label>"`` on every
            frame (``"y=3 7"`` for ``L > 1`` targets); or ``None``.
        predictions: the predicted labels, shaped like ``labels``: shown on the last frame
            as ``"p=<prediction>"``, green where right and red where wrong; or ``None``.
        ncols: episodes per row (:func:`tile_frames`).
        **render_kwargs: to :func:`render_trajectory` (``upscale``, ``footprint``,
            ``show_path``, ``colors``, ...).
    """
    fix = _to_numpy(fixations)
    n = len(images)
    if fix.ndim not in (3, 4) or fix.shape[0] != n or fix.shape[-1] != 2:
        raise ValueError(
            f"fixations must be (N, T, 2) or (N, S, K, 2) with N = {n} images, got {fix.shape}"
        )
    return render_batch(
        images,
        fix.reshape(n, -1, 2),
        glimpse_size,
        num_scales,
        scale_factor,
        labels=_target_captions(labels, n, "labels"),
        predictions=_target_captions(predictions, n, "predictions"),
        ncols=ncols,
        **render_kwargs,
    )


# --------------------------------------------------------------------------- GIF / video


def _encode_gif(frames: np.ndarray, fps: float, loop: int) -> bytes:
    """Animated GIF bytes of validated ``(T, H, W, 3)`` uint8 frames.

    Pillow merges consecutive identical frames into one longer frame, so the file may hold
    fewer than ``T`` frames; the playback timing is the same.
    """
    if not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a positive number, got {fps!r}")
    if not isinstance(loop, (int, np.integer)) or loop < 0:
        raise ValueError(f"loop must be a non-negative int (0 = forever), got {loop!r}")
    ims = [Image.fromarray(f) for f in frames]
    buf = io.BytesIO()
    ims[0].save(
        buf,
        format="GIF",
        save_all=True,
        append_images=ims[1:],
        duration=max(10, round(1000.0 / fps)),
        loop=int(loop),
    )
    return buf.getvalue()


def save_gif(
    frames: np.ndarray | Tensor, path: str | os.PathLike[str], fps: float = 2, loop: int = 0
) -> Path:
    """Write ``(T, H, W, 3)`` uint8 frames as an animated GIF; returns the path.

    ``loop=0`` repeats forever. The parent folder is created; the file is written to a
    temporary file beside it and moved into place with :func:`os.replace`, so readers
    never see a partial GIF. Colours are quantised to a per-frame 256-colour palette.
    """
    arr = _check_frames(frames)
    data = _encode_gif(arr, fps, loop)
    path = atomic_write(path, lambda f: f.write(data))
    return path


def frames_to_video_tensor(frames: np.ndarray | Tensor) -> Tensor:
    """``(T, H, W, 3)`` uint8 frames -> ``(1, T, 3, H, W)`` uint8, the layout of ``add_video``."""
    arr = _check_frames(frames)
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2).unsqueeze(0).contiguous()


def _frames_from_any(frames: Any) -> np.ndarray:
    """``(T, H, W, 3)``, ``(N, T, H, W, 3)`` or a list of ``(T_i, H_i, W_i, 3)`` -> one sequence."""
    if isinstance(frames, (list, tuple)):
        return tile_frames(frames)
    arr = _to_numpy(frames)
    if arr.ndim == 5:
        return tile_frames(list(arr))
    return _check_frames(arr)


def log_trajectories(
    writer: Any,
    tag: str,
    frames: np.ndarray | Tensor | Sequence[np.ndarray],
    global_step: int,
    fps: float = 2,
    *,
    per_step: bool = True,
) -> None:
    """Write glimpse trajectories to TensorBoard: one animation and, optionally, its frames.

    ``frames`` is ``(T, H, W, 3)`` uint8 (e.g. from :func:`render_batch`), an
    ``(N, T, H, W, 3)`` array or a list of ``N`` sequences (tiled with :func:`tile_frames`).

    Tags written (``tag`` is namespaced by the caller, e.g. ``"eval/trajectories"``):

    ``{tag}/video`` at step ``global_step``
        The whole sequence as an animated GIF in an image summary -- the same record
        ``SummaryWriter.add_video`` writes, but encoded with Pillow, so moviepy is not
        needed. TensorBoard's Images tab plays it; its slider moves across evaluations.
    ``{tag}/steps/{global_step:09d}`` at steps ``t = 0..T-1`` (when ``per_step``)
        Frame ``t`` as a PNG image, one tag per evaluation, so that tag's step slider
        plays the trajectory back step by step. The zero-padded global step keeps the
        tags sorted. TensorBoard keeps 10 images per tag by default; start it with
        ``--samples_per_plugin images=100`` (keep up to 100 per tag; note that
        ``images=0`` keeps none in TensorBoard 2.21) to see more than 10 steps.

    Nothing is flushed; the writer flushes on its own schedule or on ``writer.flush()``.

    Args:
        writer: a ``torch.utils.tensorboard.SummaryWriter`` (uses ``add_image`` and
            ``_get_file_writer().add_summary``).
        tag: non-empty tag prefix.
        frames: the frames, as above.
        global_step: the evaluation's global step (a non-negative int).
        fps: animation speed.
        per_step: also write the per-step frames.
    """
    from tensorboard.compat.proto.summary_pb2 import Summary

    if not isinstance(tag, str) or not tag.strip("/"):
        raise ValueError(f"tag must be a non-empty string, got {tag!r}")
    if not isinstance(global_step, (int, np.integer)) or isinstance(global_step, bool):
        raise ValueError(f"global_step must be an int, got {global_step!r}")
    if global_step < 0:
        raise ValueError(f"global_step must be >= 0, got {global_step}")
    tag = tag.rstrip("/")
    seq = _frames_from_any(frames)
    steps, h, w, _ = seq.shape
    gif = _encode_gif(seq, fps, loop=0)
    image = Summary.Image(height=h, width=w, colorspace=3, encoded_image_string=gif)
    summary = Summary(value=[Summary.Value(tag=f"{tag}/video", image=image)])
    writer._get_file_writer().add_summary(summary, int(global_step))
    if per_step:
        step_tag = f"{tag}/steps/{int(global_step):09d}"
        for t in range(steps):
            writer.add_image(step_tag, seq[t], global_step=t, dataformats="HWC")
