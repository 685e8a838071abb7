"""Two digits among distractors, one label for the pair: the MNIST task of the DRAM paper.

Ba, Mnih and Kavukcuoglu 2015, "Multiple Object Recognition with Visual Attention"
(arXiv:1412.7755), section 4.1 ("Learning to find digits"), as far as we know it: two
randomly picked MNIST digits on a 100×100 canvas with distractors in the background;
the *MNIST pairs* task names the unordered pair of digits (one of 55 classes), the *MNIST
addition* task their sum (one of 19). The paper's text was **not read** when this was
written (the stored copies reachable here end before its experiments), so every
detail below is **unverified**; the choices are marked "choice":

- Canvas 100×100 (recalled, unverified).
- Digit 1 of image ``i`` is source digit ``i`` of the split (as translated MNIST does),
  digit 2 a uniformly random *other* digit of the same split (choice).
- Each digit's 28×28 frame sits at a uniformly random position fully inside the canvas;
  the two frames never overlap: where they do, both are redrawn until they are disjoint
  (rejection sampling: the pair of positions is uniform over the disjoint pairs; choice:
  the paper says only "randomly placed" as we recall it). Hence ``H >= 56`` or
  ``W >= 56``.
- Distractors: ``num_clutter`` patches of ``clutter_size``² cut from random other digits
  and pasted at random positions with ``max`` (:func:`~glimpse.data.synthetic.add_clutter`,
  RAM's clutter; choice: the paper's "distraction noise in the background" is not
  specified further as we recall it). The registered presets use RAM's 100×100 setting,
  8 patches of 8×8 (:mod:`glimpse.data.registry`).
- ``label="pair"``: class :func:`pair_index` of the unordered pair, 0 .. 54 (``{a, b}``
  with ``a <= b`` in lexicographic order, :data:`PAIRS`); ``label="sum"``: ``a + b``,
  0 .. 18.

Otherwise the conventions of :mod:`glimpse.data.synthetic` hold (source splits, seeding
per ``(seed, split)``, ``limit`` = the first images of the full split, the cache). Both
labels share one cache file: the generated arrays do not depend on the label.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
import torch

from glimpse.data.mnist import DIGIT_SIZE, check_int
from glimpse.data.synthetic import (
    Arrays,
    SyntheticMNIST,
    _frame_boxes,
    _paste_max,
    add_clutter,
    left_to_right,
    parse_canvas,
)

__all__ = ["LABELS", "PAIRS", "DigitPairsMNIST", "pair_index"]

PAIRS: tuple[tuple[int, int], ...] = tuple((a, b) for a in range(10) for b in range(a, 10))
"""The 55 unordered digit pairs ``(a, b)``, ``a <= b``, in class order."""

_PAIR_INDEX = np.zeros((10, 10), dtype=np.int64)
for _k, (_a, _b) in enumerate(PAIRS):
    _PAIR_INDEX[_a, _b] = _PAIR_INDEX[_b, _a] = _k

LABELS = ("pair", "sum")
"""What :class:`DigitPairsMNIST` predicts: the unordered pair (55 classes) or the sum (19)."""

_MAX_REDRAWS = 10_000


def pair_index(digits: np.ndarray | torch.Tensor) -> np.ndarray:
    """Class of each unordered pair: ``digits (..., 2)`` ints in 0..9 -> ``(...)`` int64
    indices into :data:`PAIRS` (the same for ``(a, b)`` and ``(b, a)``)."""
    d = np.asarray(digits, dtype=np.int64)
    if d.shape[-1:] != (2,) or (d.size and (d.min() < 0 or d.max() > 9)):
        raise ValueError(f"digits must be (..., 2) ints in 0..9; got shape {d.shape}")
    return _PAIR_INDEX[d[..., 0], d[..., 1]]


def _overlap(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Whether the two 28×28 frames with corners ``x, y (n, 2)`` share a pixel."""
    return (np.abs(x[:, 0] - x[:, 1]) < DIGIT_SIZE) & (np.abs(y[:, 0] - y[:, 1]) < DIGIT_SIZE)


class DigitPairsMNIST(SyntheticMNIST):
    """Two non-overlapping digits and distractors, one label for the pair (DRAM paper).

    See the module docstring for the rule and which parts of it are unverified choices.

    Args:
        canvas: side of a square canvas, or ``(H, W)``; both ``>= 28`` and one ``>= 56``.
        label: ``"pair"`` (55 classes, :func:`pair_index`) or ``"sum"`` (19 classes).
        num_clutter: distractor patches per image (``>= 0``).
        clutter_size: side of each patch, ``1 .. 28``.
        Others: as :class:`~glimpse.data.TranslatedMNIST`.

    Attributes:
        targets: int64 ``(N,)`` the class (``label``).
        digits: int64 ``(N, 2)`` the two digits, left to right (box centre x, then y).
        boxes: float32 ``(N, 2, 4)`` their 28×28 frames ``(x0, y0, x1, y1)``, same order.
        clutter_boxes: float32 ``(N, num_clutter, 4)`` the distractor patches.
        label, num_clutter, clutter_size: as given.
    """

    kind = "pairs"

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        split: str = "train",
        canvas: int | tuple[int, int] = 100,
        label: str = "pair",
        num_clutter: int = 8,
        clutter_size: int = 8,
        seed: int = 0,
        val_size: int = 5000,
        split_seed: int = 0,
        download: bool = False,
        transform: Callable | None = None,
        target_transform: Callable | None = None,
        cache: bool = True,
        limit: int | None = None,
    ) -> None:
        if label not in LABELS:
            raise ValueError(f"label={label!r} must be one of {', '.join(LABELS)}")
        hw = parse_canvas(canvas)
        if max(hw) < 2 * DIGIT_SIZE:
            raise ValueError(
                f"canvas={canvas!r} cannot hold two disjoint 28x28 digits: need height or "
                f"width >= {2 * DIGIT_SIZE}"
            )
        self.label = label
        self.num_clutter = check_int("num_clutter", num_clutter, 0)
        self.clutter_size = check_int("clutter_size", clutter_size, 1, DIGIT_SIZE)
        self.classes = (
            tuple(f"{a},{b}" for a, b in PAIRS) if label == "pair" else tuple(map(str, range(19)))
        )
        super().__init__(
            root=root,
            split=split,
            canvas=hw,
            seed=seed,
            val_size=val_size,
            split_seed=split_seed,
            download=download,
            transform=transform,
            target_transform=target_transform,
            cache=cache,
            limit=limit,
            params={"num_clutter": self.num_clutter, "clutter_size": self.clutter_size},
        )
        # The cache holds the (N, 2) digits (SyntheticMNIST's checks apply); the class is
        # derived from them.
        self.digits = self.targets
        if label == "pair":
            self.targets = torch.from_numpy(pair_index(self.digits.numpy()))
        else:
            self.targets = self.digits.sum(1)

    def _target_shape(self, n: int) -> tuple[int, ...]:
        return (n, 2)

    def _extra_shapes(self, n: int) -> dict[str, tuple[int, ...]]:
        return {"clutter_boxes": (n, self.num_clutter, 4)}

    def _generate(
        self, images: np.ndarray, labels: np.ndarray, n: int, rng: np.random.Generator
    ) -> Arrays:
        h, w = self.canvas
        total = len(images)
        if total < 2:
            raise ValueError(f"pairs need at least 2 source digits; split has {total}")
        other = rng.integers(0, total - 1, size=total)
        other += other >= np.arange(total)  # never the image's own first digit
        src = np.stack([np.arange(total), other], axis=1)
        y = rng.integers(0, h - DIGIT_SIZE + 1, size=(total, 2))
        x = rng.integers(0, w - DIGIT_SIZE + 1, size=(total, 2))
        clash = np.flatnonzero(_overlap(x, y))
        for _ in range(_MAX_REDRAWS):  # redraw both frames where the two overlap
            if not len(clash):
                break
            y[clash] = rng.integers(0, h - DIGIT_SIZE + 1, size=(len(clash), 2))
            x[clash] = rng.integers(0, w - DIGIT_SIZE + 1, size=(len(clash), 2))
            clash = clash[_overlap(x[clash], y[clash])]
        if len(clash):
            raise RuntimeError(f"could not place two disjoint digits on {h}x{w}")
        boxes = _frame_boxes(x[:n], y[:n])
        order = left_to_right(boxes)
        src = np.take_along_axis(src[:n], order, axis=1)
        boxes = np.take_along_axis(boxes, order[..., None], axis=1)
        x0, y0 = boxes[..., 0].astype(np.int64), boxes[..., 1].astype(np.int64)
        data = np.zeros((n, h, w), dtype=np.uint8)
        for j in range(2):  # one pass per digit slot, every image at once
            _paste_max(data, images[src[:, j]], y0[:, j], x0[:, j])
        clutter = add_clutter(data, images, self.num_clutter, self.clutter_size, rng, self.split)
        self._extras["clutter_boxes"] = clutter
        return data, labels[src], boxes

    def _extra_repr(self) -> str:
        return f"{super()._extra_repr()}, label={self.label!r}"
