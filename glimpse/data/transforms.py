"""Joint transforms: move an image, its bounding box and its part locations together.

Every transform is called as ``transform(image, box, parts) -> (image, box, parts)``:

- ``image``: a PIL image or a tensor ``(C, H, W)``.
- ``box``: float tensor ``(..., 4)``, ``(x0, y0, x1, y1)`` in pixels, or ``None``.
- ``parts``: float tensor ``(..., P, 3)``, ``(x, y, visible)`` in pixels, or ``None``.
  Invisible parts always read ``x = y = 0, visible = 0``.

Coordinates are continuous pixel coordinates: pixel column ``i`` spans ``[i, i + 1)``, so
a horizontal flip maps ``x`` to ``W - x`` and a crop at ``(top, left)`` subtracts
``(left, top)``. After a crop the box is clipped to the crop (it may become empty) and
parts outside ``[0, w) × [0, h)`` become invisible. Inputs are never modified in place.

Made for CUB-200-2011 (Wah et al. 2011): :class:`RandomHorizontalFlip` also swaps the
left/right part ids (eye, leg, wing). Random transforms draw from an optional
``torch.Generator`` so that augmentation can be seeded.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torchvision.transforms.functional as F
from torchvision.transforms import InterpolationMode

Sample = tuple[Any, torch.Tensor | None, torch.Tensor | None]

CUB_PART_NAMES: tuple[str, ...] = (
    "back",
    "beak",
    "belly",
    "breast",
    "crown",
    "forehead",
    "left eye",
    "left leg",
    "left wing",
    "nape",
    "right eye",
    "right leg",
    "right wing",
    "tail",
    "throat",
)
"""CUB-200-2011's ``parts/parts.txt``, 0-based (part id ``i + 1``)."""


def mirror_pairs(part_names: Sequence[str]) -> tuple[tuple[int, int], ...]:
    """0-based index pairs ``(left X, right X)`` of parts named ``"left X"`` / ``"right X"``."""
    index = {name: i for i, name in enumerate(part_names)}
    return tuple(
        (i, index["right " + name[len("left ") :]])
        for i, name in enumerate(part_names)
        if name.startswith("left ") and "right " + name[len("left ") :] in index
    )


CUB_MIRROR_PAIRS = mirror_pairs(CUB_PART_NAMES)
"""``((6, 10), (7, 11), (8, 12))``: left/right eye, leg and wing of CUB."""


def _pair(size: int | Sequence[int], name: str) -> tuple[int, int]:
    """``size`` as ``(h, w)`` of positive ints; an int means a square."""
    hw = (size, size) if isinstance(size, int) else tuple(size)
    if len(hw) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in hw):
        raise ValueError(f"{name}={size!r} must be a positive int or a pair (h, w) of them")
    return int(hw[0]), int(hw[1])


def image_size(image: Any) -> tuple[int, int]:
    """``(H, W)`` of a PIL image or a ``(..., H, W)`` tensor."""
    _, h, w = F.get_dimensions(image)
    return h, w


def _scale(
    box: torch.Tensor | None, parts: torch.Tensor | None, sx: float, sy: float
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    if box is not None:
        box = box * box.new_tensor([sx, sy, sx, sy])
    if parts is not None:
        parts = parts * parts.new_tensor([sx, sy, 1.0])  # invisible parts stay at 0
    return box, parts


def _shift_and_clip(
    box: torch.Tensor | None, parts: torch.Tensor | None, top: int, left: int, h: int, w: int
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Move the targets into a ``h × w`` window whose top-left corner was at ``(left, top)``."""
    if box is not None:
        box = box - box.new_tensor([left, top, left, top])
        box = torch.stack(
            [
                box[..., 0].clamp(0, w),
                box[..., 1].clamp(0, h),
                box[..., 2].clamp(0, w),
                box[..., 3].clamp(0, h),
            ],
            dim=-1,
        )
    if parts is not None:
        x = parts[..., 0] - left
        y = parts[..., 1] - top
        keep = (parts[..., 2] > 0) & (x >= 0) & (x < w) & (y >= 0) & (y < h)
        parts = torch.stack([x, y, torch.ones_like(x)], dim=-1) * keep[..., None]
    return box, parts


def crop(
    image: Any,
    box: torch.Tensor | None,
    parts: torch.Tensor | None,
    top: int,
    left: int,
    height: int,
    width: int,
) -> Sample:
    """Crop the window at ``(top, left)`` of size ``height × width`` (zero-padded outside)."""
    image = F.crop(image, top, left, height, width)
    return (image, *_shift_and_clip(box, parts, top, left, height, width))


def resize(
    image: Any,
    box: torch.Tensor | None,
    parts: torch.Tensor | None,
    size: int | Sequence[int],
    interpolation: InterpolationMode = InterpolationMode.BILINEAR,
) -> Sample:
    """Resize as ``torchvision.transforms.functional.resize`` and scale the targets."""
    h, w = image_size(image)
    size = [size] if isinstance(size, int) else list(size)
    image = F.resize(image, size, interpolation=interpolation, antialias=True)
    nh, nw = image_size(image)
    return (image, *_scale(box, parts, nw / w, nh / h))


def hflip(
    image: Any,
    box: torch.Tensor | None,
    parts: torch.Tensor | None,
    mirror: Sequence[tuple[int, int]] = CUB_MIRROR_PAIRS,
) -> Sample:
    """Mirror left-right: ``x -> W - x`` and swap the part ids paired in ``mirror``."""
    _, w = image_size(image)
    image = F.hflip(image)
    if box is not None:
        box = torch.stack([w - box[..., 2], box[..., 1], w - box[..., 0], box[..., 3]], dim=-1)
    if parts is not None:
        num_parts = parts.shape[-2]
        perm = list(range(num_parts))
        for a, b in mirror:
            if not (0 <= a < num_parts and 0 <= b < num_parts):
                raise ValueError(
                    f"mirror pair {(a, b)} is out of range for parts with {num_parts} rows"
                )
            perm[a], perm[b] = b, a
        visible = parts[..., 2] > 0
        x = torch.where(visible, w - parts[..., 0], parts[..., 0])
        parts = torch.stack([x, parts[..., 1], parts[..., 2]], dim=-1)[..., perm, :]
    return image, box, parts


class Compose:
    """Apply joint transforms in order."""

    def __init__(self, transforms: Sequence[Callable[..., Sample]]) -> None:
        self.transforms = list(transforms)

    def __call__(
        self, image: Any, box: torch.Tensor | None = None, parts: torch.Tensor | None = None
    ) -> Sample:
        for t in self.transforms:
            image, box, parts = t(image, box, parts)
        return image, box, parts

    def __repr__(self) -> str:
        inner = "".join(f"\n    {t!r}," for t in self.transforms)
        return f"Compose([{inner}\n])"


class ImageOnly:
    """Lift an image-only transform that moves no pixel (e.g. ``ColorJitter``) to a joint one."""

    def __init__(self, transform: Callable[[Any], Any]) -> None:
        self.transform = transform

    def __call__(
        self, image: Any, box: torch.Tensor | None = None, parts: torch.Tensor | None = None
    ) -> Sample:
        return self.transform(image), box, parts

    def __repr__(self) -> str:
        return f"ImageOnly({self.transform!r})"


class Resize:
    """Resize the image (torchvision semantics: an int matches the shorter side) and scale
    box and parts by the same factors."""

    def __init__(
        self,
        size: int | Sequence[int],
        interpolation: InterpolationMode = InterpolationMode.BILINEAR,
    ) -> None:
        _pair(size, "size")
        self.size = size
        self.interpolation = interpolation

    def __call__(
        self, image: Any, box: torch.Tensor | None = None, parts: torch.Tensor | None = None
    ) -> Sample:
        return resize(image, box, parts, self.size, self.interpolation)

    def __repr__(self) -> str:
        return f"Resize(size={self.size!r})"


class RandomHorizontalFlip:
    """With probability ``p``, mirror image, box and parts, swapping left/right part ids.

    Args:
        p: flip probability in ``[0, 1]``.
        mirror: 0-based part index pairs to swap; CUB's left/right eye, leg and wing by
            default (see :func:`mirror_pairs`).
        generator: source of randomness; ``None`` uses torch's global generator.
    """

    def __init__(
        self,
        p: float = 0.5,
        mirror: Sequence[tuple[int, int]] = CUB_MIRROR_PAIRS,
        generator: torch.Generator | None = None,
    ) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p={p!r} must be in [0, 1]")
        self.p = p
        self.mirror = tuple(mirror)
        self.generator = generator

    def __call__(
        self, image: Any, box: torch.Tensor | None = None, parts: torch.Tensor | None = None
    ) -> Sample:
        if torch.rand((), generator=self.generator).item() < self.p:
            return hflip(image, box, parts, self.mirror)
        return image, box, parts

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"


class CenterCrop:
    """Crop the central ``size`` window (an int means a square); zero-pads a small image."""

    def __init__(self, size: int | Sequence[int]) -> None:
        self.size = _pair(size, "size")

    def __call__(
        self, image: Any, box: torch.Tensor | None = None, parts: torch.Tensor | None = None
    ) -> Sample:
        h, w = image_size(image)
        ch, cw = self.size
        return crop(image, box, parts, (h - ch) // 2, (w - cw) // 2, ch, cw)

    def __repr__(self) -> str:
        return f"CenterCrop(size={self.size})"


def _randint(high: int, generator: torch.Generator | None) -> int:
    """Uniform integer in ``[0, high]``."""
    return int(torch.randint(high + 1, (), generator=generator))


class RandomCrop:
    """Crop a uniformly random ``size`` window lying inside the image.

    Raises ValueError when the image is smaller than ``size``.
    """

    def __init__(self, size: int | Sequence[int], generator: torch.Generator | None = None) -> None:
        self.size = _pair(size, "size")
        self.generator = generator

    def __call__(
        self, image: Any, box: torch.Tensor | None = None, parts: torch.Tensor | None = None
    ) -> Sample:
        h, w = image_size(image)
        ch, cw = self.size
        if ch > h or cw > w:
            raise ValueError(f"crop size {self.size} is larger than the image ({h}, {w})")
        top, left = _randint(h - ch, self.generator), _randint(w - cw, self.generator)
        return crop(image, box, parts, top, left, ch, cw)

    def __repr__(self) -> str:
        return f"RandomCrop(size={self.size})"


class RandomResizedCrop:
    """Crop a random window of random area and aspect ratio, then resize it to ``size``.

    The Inception-style crop (Szegedy et al. 2015): the window covers a fraction of the
    image area drawn uniformly from ``scale`` and has a width/height ratio drawn
    log-uniformly from ``ratio``; after 10 failed draws it falls back to the largest
    central window with a ratio inside ``ratio``.
    """

    def __init__(
        self,
        size: int | Sequence[int],
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        interpolation: InterpolationMode = InterpolationMode.BILINEAR,
        generator: torch.Generator | None = None,
    ) -> None:
        self.size = _pair(size, "size")
        if not 0 < scale[0] <= scale[1] <= 1:
            raise ValueError(f"scale={scale!r} must satisfy 0 < min <= max <= 1")
        if not 0 < ratio[0] <= ratio[1]:
            raise ValueError(f"ratio={ratio!r} must satisfy 0 < min <= max")
        self.scale = scale
        self.ratio = ratio
        self.interpolation = interpolation
        self.generator = generator

    def window(self, height: int, width: int) -> tuple[int, int, int, int]:
        """A random ``(top, left, h, w)`` window of a ``height × width`` image."""
        area = height * width
        log_lo, log_hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        for _ in range(10):
            u = torch.rand(2, generator=self.generator).tolist()
            target = area * (self.scale[0] + (self.scale[1] - self.scale[0]) * u[0])
            aspect = math.exp(log_lo + (log_hi - log_lo) * u[1])
            w = round(math.sqrt(target * aspect))
            h = round(math.sqrt(target / aspect))
            if 0 < w <= width and 0 < h <= height:
                top = _randint(height - h, self.generator)
                left = _randint(width - w, self.generator)
                return top, left, h, w
        aspect = width / height
        if aspect < self.ratio[0]:
            w, h = width, round(width / self.ratio[0])
        elif aspect > self.ratio[1]:
            h, w = height, round(height * self.ratio[1])
        else:
            h, w = height, width
        return (height - h) // 2, (width - w) // 2, h, w

    def __call__(
        self, image: Any, box: torch.Tensor | None = None, parts: torch.Tensor | None = None
    ) -> Sample:
        top, left, h, w = self.window(*image_size(image))
        image, box, parts = crop(image, box, parts, top, left, h, w)
        return resize(image, box, parts, self.size, self.interpolation)

    def __repr__(self) -> str:
        return f"RandomResizedCrop(size={self.size}, scale={self.scale}, ratio={self.ratio})"


class ToTensor:
    """PIL image to a float tensor ``(C, H, W)`` in ``[0, 1]``; targets unchanged."""

    def __call__(
        self, image: Any, box: torch.Tensor | None = None, parts: torch.Tensor | None = None
    ) -> Sample:
        return (image if isinstance(image, torch.Tensor) else F.to_tensor(image)), box, parts

    def __repr__(self) -> str:
        return "ToTensor()"


class Normalize:
    """``(image - mean) / std`` per channel on a tensor image; targets unchanged."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        if any(s <= 0 for s in std):
            raise ValueError(f"std={std!r} must be positive")
        self.mean = list(mean)
        self.std = list(std)

    def __call__(
        self, image: Any, box: torch.Tensor | None = None, parts: torch.Tensor | None = None
    ) -> Sample:
        if not isinstance(image, torch.Tensor):
            raise ValueError(f"Normalize needs a tensor image; got {type(image).__name__}")
        return F.normalize(image, self.mean, self.std), box, parts

    def __repr__(self) -> str:
        return f"Normalize(mean={self.mean}, std={self.std})"
