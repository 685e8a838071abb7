"""Where a model looks, as data: attention maps over the input image and their scores.

The common form of "where a model looks" is a **spatial attention distribution over the
input image**: a ``(B, H, W)`` map per image that is non-negative and sums to one. Hard
agents give it through their fixations (the glimpse boxes' footprint,
:func:`footprint_map`); the scores below take any such map, so hard and soft models are
scored by the same code.

Scores against the boxes the translated and cluttered datasets record
(``(x0, y0, x1, y1)`` in continuous pixel coordinates, the convention of
:mod:`glimpse.retina`: pixel ``(r, c)`` covers ``[c, c + 1] x [r, r + 1]``):

- :func:`mass_in_boxes`: the fraction of a map's mass inside the union of boxes ("box hit"
  for soft maps); exact for maps that are constant over each pixel, partly covered pixels
  counting by the covered area;
- :func:`fixations_in_boxes`: per step, whether a fixation point falls inside a box (the
  box hit of hard agents, per step and averaged);
- :func:`pointing_hits`: whether the map's maximum lies inside a box (the pointing game of
  Zhang et al. 2016, *Top-down Neural Attention by Excitation Backprop*);
- :func:`map_scores` and :func:`fixation_scores`: all of the above for a batch, with the
  mass (or fixations) on clutter outside the digits, as the export and the summary use them.

:func:`grad_cam` gives every CNN (with or without an attention block) a common baseline
map in the same form.

Locations are ``(x, y)`` in ``[-1, 1]`` as everywhere in Glimpse (:func:`glimpse.retina.
loc_to_pixel`); the glimpse boxes come from :func:`glimpse.retina.patch_boxes`, the same
geometry the retina reads.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from glimpse.retina import loc_to_pixel, patch_boxes

__all__ = [
    "box_coverage",
    "fixation_scores",
    "fixations_in_boxes",
    "footprint_map",
    "grad_cam",
    "map_scores",
    "mass_in_boxes",
    "pointing_hits",
    "to_image_distribution",
]


def _check_boxes(boxes: Tensor, batch: int | None = None) -> Tensor:
    """``boxes`` as ``(B, n, 4)``; ``(B, 4)`` becomes ``(B, 1, 4)``."""
    if not isinstance(boxes, Tensor) or not boxes.is_floating_point():
        raise ValueError(f"boxes must be a floating-point tensor (B, [n,] 4), got {boxes!r}")
    if boxes.ndim == 2:
        boxes = boxes[:, None]
    if boxes.ndim != 3 or boxes.shape[-1] != 4:
        raise ValueError(f"boxes must have shape (B, 4) or (B, n, 4), got {tuple(boxes.shape)}")
    if batch is not None and boxes.shape[0] != batch:
        raise ValueError(f"boxes has {boxes.shape[0]} rows but there are {batch} maps")
    if not torch.isfinite(boxes).all():
        raise ValueError("boxes must be finite")
    return boxes


def _check_maps(maps: Tensor) -> None:
    if not isinstance(maps, Tensor) or maps.ndim != 3 or not maps.is_floating_point():
        shape = tuple(maps.shape) if isinstance(maps, Tensor) else type(maps).__name__
        raise ValueError(f"maps must be a floating-point tensor (B, H, W), got {shape}")


def _axis_overlap(lo: Tensor, hi: Tensor, length: int) -> Tensor:
    """``(..., length)``: the length of ``[lo, hi] ∩ [p, p + 1]`` for every pixel ``p``."""
    p = torch.arange(length, dtype=lo.dtype, device=lo.device)
    return (torch.minimum(hi[..., None], p + 1) - torch.maximum(lo[..., None], p)).clamp_min(0)


def box_coverage(boxes: Tensor, height: int, width: int) -> Tensor:
    """The area of each pixel covered by each box: ``(B, n, 4) -> (B, n, H, W)`` in
    ``[0, 1]`` (``(B, 4) -> (B, 1, H, W)``). Parts of a box outside the image cover
    nothing."""
    boxes = _check_boxes(boxes)
    wx = _axis_overlap(boxes[..., 0], boxes[..., 2], width)  # (B, n, W)
    wy = _axis_overlap(boxes[..., 1], boxes[..., 3], height)  # (B, n, H)
    return wy[..., :, None] * wx[..., None, :]


def footprint_map(
    locations: Tensor,
    height: int,
    width: int,
    glimpse_size: int,
    num_scales: int = 1,
    scale_factor: float = 2.0,
    scales: Literal["finest", "all"] = "finest",
) -> Tensor:
    """The attention distribution of a hard agent: its glimpse boxes' footprint.

    ``locations (B, T, 2)`` (the ``T`` fixations of each episode) -> ``(B, H, W)``,
    non-negative, summing to one per image. Every fixation carries the same mass, spread
    uniformly over the inside-the-image part of its finest patch (``scales="finest"``) or,
    with ``scales="all"``, shared equally by its ``num_scales`` patches, each uniform over
    its own area (so the fine patch is denser where the scales overlap). A fixation whose
    patches lie wholly outside the image (impossible for centres in ``[-1, 1]^2``) carries
    no mass.
    """
    if not isinstance(locations, Tensor) or locations.ndim != 3 or locations.shape[-1] != 2:
        shape = tuple(locations.shape) if isinstance(locations, Tensor) else locations
        raise ValueError(f"locations must have shape (B, T, 2), got {shape}")
    if scales not in ("finest", "all"):
        raise ValueError(f"scales must be 'finest' or 'all', got {scales!r}")
    b, t, _ = locations.shape
    boxes = patch_boxes(
        locations.reshape(b * t, 2), height, width, glimpse_size, num_scales, scale_factor
    )  # (B*T, k, 4)
    if scales == "finest":
        boxes = boxes[:, :1]
    cover = box_coverage(boxes, height, width)  # (B*T, k', H, W)
    area = cover.sum(dim=(-2, -1), keepdim=True)
    per_box = torch.where(area > 0, cover / area.clamp_min(1e-12), torch.zeros_like(cover))
    maps = per_box.mean(dim=1).reshape(b, t, height, width).sum(dim=1)  # (B, H, W)
    total = maps.sum(dim=(-2, -1), keepdim=True)
    return maps / total.clamp_min(1e-12)


def mass_in_boxes(maps: Tensor, boxes: Tensor) -> Tensor:
    """The fraction of each map's mass inside the union of its boxes: ``(B,)`` in
    ``[0, 1]``.

    ``maps (B, H, W)`` non-negative (normalised here, so raw maps may be passed);
    ``boxes (B, 4)`` or ``(B, n, 4)``. A pixel partly inside counts by the covered area.
    """
    _check_maps(maps)
    boxes = _check_boxes(boxes, maps.shape[0]).to(maps.dtype)
    if (maps < 0).any():
        raise ValueError("maps must be non-negative (an attention distribution)")
    cover = box_coverage(boxes, maps.shape[1], maps.shape[2])  # (B, n, H, W)
    # exact for one box and for boxes that share no partly covered pixel
    union = 1 - torch.prod(1 - cover, dim=1)
    total = maps.sum(dim=(-2, -1))
    inside = (maps * union).sum(dim=(-2, -1))
    return inside / total.clamp_min(torch.finfo(maps.dtype).tiny)


def pointing_hits(maps: Tensor, boxes: Tensor) -> Tensor:
    """The pointing game: whether each map's maximum (its first, in row-major order, on
    ties) is a pixel whose centre lies inside one of its boxes: ``(B,)`` bool."""
    _check_maps(maps)
    boxes = _check_boxes(boxes, maps.shape[0])
    b, _, w = maps.shape
    flat = maps.reshape(b, -1).argmax(dim=1)
    centre = torch.stack([(flat % w).to(boxes.dtype) + 0.5, (flat // w).to(boxes.dtype) + 0.5], 1)
    return _points_in_boxes(centre[:, None], boxes)[:, 0]


def _points_in_boxes(points: Tensor, boxes: Tensor) -> Tensor:
    """``points (B, T, 2)`` pixel coordinates, ``boxes (B, n, 4)`` -> ``(B, T)`` bool:
    inside (closed) any of the image's boxes."""
    x, y = points[..., 0, None], points[..., 1, None]  # (B, T, 1)
    x0, y0, x1, y1 = (boxes[:, None, :, i] for i in range(4))  # (B, 1, n)
    return ((x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)).any(dim=-1)


def fixations_in_boxes(locations: Tensor, boxes: Tensor, height: int, width: int) -> Tensor:
    """Whether each fixation lies inside one of its image's boxes: ``locations (B, T, 2)``
    in ``[-1, 1]``, ``boxes (B, 4)`` or ``(B, n, 4)`` pixels -> ``(B, T)`` bool (mean over
    ``B`` for the per-step box hit of a hard agent, over both for its average)."""
    if not isinstance(locations, Tensor) or locations.ndim != 3 or locations.shape[-1] != 2:
        shape = tuple(locations.shape) if isinstance(locations, Tensor) else locations
        raise ValueError(f"locations must have shape (B, T, 2), got {shape}")
    boxes = _check_boxes(boxes, locations.shape[0])
    b, t, _ = locations.shape
    pix = loc_to_pixel(locations.reshape(b * t, 2), height, width).reshape(b, t, 2)
    return _points_in_boxes(pix.to(boxes.dtype), boxes)


def map_scores(
    maps: Tensor, boxes: Tensor, clutter_boxes: Tensor | None = None
) -> dict[str, Tensor]:
    """The box scores of attention distributions ``maps (B, H, W)`` against the digits'
    ``boxes (B, [n,] 4)`` and, if given, the clutter patches' ``clutter_boxes (B, K, 4)``:

    - ``mass_in_box (B,)``: :func:`mass_in_boxes` of the digits' boxes;
    - ``mass_on_clutter (B,)`` (with ``clutter_boxes``): the mass on clutter and not on a
      digit (mass in the union of all boxes minus ``mass_in_box``);
    - ``pointing (B,)`` bool: :func:`pointing_hits` of the digits' boxes.
    """
    _check_maps(maps)
    digit = _check_boxes(boxes, maps.shape[0]).to(maps.dtype)
    inside = mass_in_boxes(maps, digit)
    out = {"mass_in_box": inside, "pointing": pointing_hits(maps, digit)}
    if clutter_boxes is not None:
        both = torch.cat([digit, _check_boxes(clutter_boxes, maps.shape[0]).to(maps.dtype)], 1)
        out["mass_on_clutter"] = (mass_in_boxes(maps, both) - inside).clamp_min(0)
    return out


def fixation_scores(
    locations: Tensor,
    boxes: Tensor,
    height: int,
    width: int,
    clutter_boxes: Tensor | None = None,
) -> dict[str, Tensor]:
    """Per fixation, whether it lies in a digit's box and (with ``clutter_boxes``) on
    clutter outside every digit: ``locations (B, T, 2)`` or ``(B, S, K, 2)`` (``K`` parts
    per step) -> ``fixation_in_box`` and ``fixation_on_clutter``, bool of the locations'
    leading shape (mean over ``B`` for the per-step scores of a hard agent)."""
    if not isinstance(locations, Tensor) or locations.ndim not in (3, 4):
        shape = tuple(locations.shape) if isinstance(locations, Tensor) else locations
        raise ValueError(f"locations must have shape (B, T, 2) or (B, S, K, 2), got {shape}")
    lead = locations.shape[:-1]
    flat = locations.reshape(lead[0], -1, 2)
    hit = fixations_in_boxes(flat, boxes, height, width)
    out = {"fixation_in_box": hit.reshape(lead)}
    if clutter_boxes is not None:
        on = fixations_in_boxes(flat, clutter_boxes, height, width) & ~hit
        out["fixation_on_clutter"] = on.reshape(lead)
    return out


def to_image_distribution(maps: Tensor, height: int, width: int) -> Tensor:
    """A map at a feature map's resolution as an attention distribution over the image.

    ``maps (B, h, w)`` -> ``(B, H, W)``: negative values are clamped to zero, the map is
    upsampled bilinearly (``align_corners=False``: pixel centres line up as in
    :mod:`glimpse.retina`) to ``H x W`` and normalised to sum to one per image; a map that
    is zero everywhere becomes uniform (the model points nowhere). Used by :func:`grad_cam`
    and by the soft modules' own maps (``soft_baselines.attention_maps``).
    """
    _check_maps(maps)
    up = torch.nn.functional.interpolate(
        maps.clamp_min(0)[:, None], size=(height, width), mode="bilinear", align_corners=False
    )[:, 0]
    total = up.sum(dim=(-2, -1), keepdim=True)
    uniform = torch.full_like(up, 1.0 / (height * width))
    return torch.where(total > 0, up / total.clamp_min(1e-30), uniform)


def grad_cam(
    model: torch.nn.Module,
    layer: torch.nn.Module,
    images: Tensor,
    targets: Tensor | None = None,
) -> Tensor:
    """Grad-CAM (Selvaraju et al. 2017, *Grad-CAM: Visual Explanations from Deep Networks
    via Gradient-based Localization*, arXiv:1610.02391) as an attention distribution.

    ``model(images)`` returns logits ``(B, num_classes)``; ``layer`` is one of its modules
    (e.g. the last conv stage) whose output ``A (B, C, h, w)`` is explained. The channel
    weights are the spatial means of ``d logit_target / dA``; the map is
    ``relu(sum_c weight_c A_c)``, upsampled bilinearly (``align_corners=False``) to the
    image's ``H x W`` and normalised to sum to one (a map that is zero everywhere becomes
    uniform: the model points nowhere; :func:`to_image_distribution`). ``targets (B,)``:
    the classes to explain (default: the predicted ones). The model's parameters get no
    gradient; its mode is left as is. Returns ``(B, H, W)``.
    """
    if not isinstance(images, Tensor) or images.ndim != 4:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images must have shape (B, C, H, W), got {shape}")
    store: dict[str, Tensor] = {}

    def keep(_module: torch.nn.Module, _inputs: object, output: Tensor) -> None:
        if not isinstance(output, Tensor) or output.ndim != 4:
            raise ValueError("grad_cam's layer must output a (B, C, h, w) tensor")
        output.retain_grad()
        store["a"] = output

    handle = layer.register_forward_hook(keep)
    try:
        with torch.enable_grad():
            logits = model(images)
            if "a" not in store:
                raise ValueError("grad_cam's layer was not called by model(images)")
            if targets is None:
                targets = logits.argmax(dim=1)
            score = logits.gather(1, targets.reshape(-1, 1).to(logits.device)).sum()
            (grads,) = torch.autograd.grad(score, store["a"])
    finally:
        handle.remove()
    acts = store["a"].detach()
    weights = grads.mean(dim=(2, 3), keepdim=True)  # (B, C, 1, 1)
    cam = torch.relu((weights * acts).sum(dim=1))  # (B, h, w)
    return to_image_distribution(cam, images.shape[-2], images.shape[-1])
