"""Part-hit metrics: do the part locations an agent chooses land on annotated parts?

Fine-grained part-attention papers (e.g. Liu et al. 2016, FCAN) show where their parts
land but do not score it. Here, per chosen part:

- **CUB-200-2011** (:func:`part_hits`): a chosen location *hits* when it lies within
  ``radius * max(box width, box height)`` pixels (Euclidean) of at least one *visible*
  annotated part of the image (the 15 parts of Wah et al. 2011).
- **Two-digit proxy** (:func:`digit_hits`): a chosen location hits when it lies inside
  one of the digits' 28x28 frames (``x0 <= px <= x1`` and ``y0 <= py <= y1``).

Locations are ``(x, y)`` in ``[-1, 1]`` (the retina's convention,
:func:`glimpse.retina.loc_to_pixel`); annotations are pixel coordinates of the same image.
:func:`hit_summary` reports the overall rate and the rate of each part slot.
"""

from __future__ import annotations

import torch
from torch import Tensor

from glimpse.retina import loc_to_pixel

__all__ = ["digit_hits", "digits_covered", "hit_summary", "part_hits"]


def _pixels(locations: Tensor, image_hw: tuple[int, int]) -> Tensor:
    if locations.ndim != 3 or locations.shape[-1] != 2:
        raise ValueError(f"locations must be (n, K, 2), got {tuple(locations.shape)}")
    n, k, _ = locations.shape
    h, w = image_hw
    return loc_to_pixel(locations.reshape(-1, 2).float(), h, w).view(n, k, 2)


def part_hits(
    locations: Tensor,
    parts: Tensor,
    boxes: Tensor,
    image_hw: tuple[int, int],
    radius: float = 0.25,
) -> Tensor:
    """``(n, K)`` bool: chosen location ``k`` of image ``i`` is within ``radius *
    max(box side)`` pixels of a visible annotated part.

    Args:
        locations: ``(n, K, 2)`` chosen part locations in ``[-1, 1]``.
        parts: ``(n, P, 3)`` annotated parts ``x, y, visible`` in pixels.
        boxes: ``(n, 4)`` object boxes ``x0, y0, x1, y1`` in pixels.
        image_hw: ``(H, W)`` of the image the locations and annotations refer to.
        radius: the hit radius as a fraction of the box's longer side (``> 0``).
    """
    if not radius > 0:
        raise ValueError(f"radius must be positive, got {radius!r}")
    if parts.ndim != 3 or parts.shape[-1] != 3 or boxes.shape != (parts.shape[0], 4):
        raise ValueError(
            f"need parts (n, P, 3) and boxes (n, 4), got {tuple(parts.shape)}, {tuple(boxes.shape)}"
        )
    if locations.shape[0] != parts.shape[0]:
        raise ValueError(f"{locations.shape[0]} location rows but {parts.shape[0]} annotations")
    pix = _pixels(locations, image_hw)
    parts, boxes = parts.to(pix), boxes.to(pix)
    size = torch.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])  # (n,)
    dist = (pix[:, :, None, :] - parts[:, None, :, :2]).norm(dim=-1)  # (n, K, P)
    near = dist <= radius * size[:, None, None]
    return (near & (parts[:, None, :, 2] > 0)).any(-1)


def digit_hits(locations: Tensor, boxes: Tensor, image_hw: tuple[int, int]) -> Tensor:
    """``(n, K)`` bool: chosen location ``k`` lies inside one of the ``D`` digit frames
    ``boxes`` ``(n, D, 4)`` (pixels, ``x0, y0, x1, y1``)."""
    return _inside(locations, boxes, image_hw).any(-1)


def digits_covered(locations: Tensor, boxes: Tensor, image_hw: tuple[int, int]) -> Tensor:
    """``(n,)`` bool: every digit frame holds at least one chosen location."""
    return _inside(locations, boxes, image_hw).any(1).all(-1)


def _inside(locations: Tensor, boxes: Tensor, image_hw: tuple[int, int]) -> Tensor:
    """``(n, K, D)``: location ``k`` inside box ``d``."""
    if boxes.ndim != 3 or boxes.shape[-1] != 4 or boxes.shape[0] != locations.shape[0]:
        raise ValueError(f"boxes must be (n={locations.shape[0]}, D, 4), got {tuple(boxes.shape)}")
    pix = _pixels(locations, image_hw)[:, :, None, :]  # (n, K, 1, 2)
    b = boxes.to(pix)[:, None]  # (n, 1, D, 4)
    return (
        (pix[..., 0] >= b[..., 0])
        & (pix[..., 0] <= b[..., 2])
        & (pix[..., 1] >= b[..., 1])
        & (pix[..., 1] <= b[..., 3])
    )


def hit_summary(hits: Tensor, prefix: str = "part_hit") -> dict[str, float]:
    """``{prefix: overall rate, f"{prefix}/{k}": rate of part slot k}`` from ``(n, K)``."""
    if hits.ndim != 2 or hits.shape[0] == 0:
        raise ValueError(f"hits must be a non-empty (n, K) tensor, got {tuple(hits.shape)}")
    h = hits.float()
    out = {prefix: h.mean().item()}
    out.update({f"{prefix}/{k}": v.item() for k, v in enumerate(h.mean(0))})
    return out
