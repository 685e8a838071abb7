"""Two cluttered digits as one of 100 classes: a measurable fine-grained proxy.

A stand-in for part-based fine-grained recognition (Liu et al. 2016, "Fully Convolutional
Attention Networks for Fine-Grained Recognition", FCAN) that runs on a CPU: the class is
decided by two small "parts" (the digits) that both have to be found on a cluttered
canvas. Built from the :mod:`glimpse.data.synthetic` machinery (placement of
:class:`~glimpse.data.MultiMNIST`, clutter of :class:`~glimpse.data.ClutteredMNIST`,
seeding and caching of :class:`~glimpse.data.synthetic.SyntheticMNIST`).

- Two digits at non-overlapping positions (MultiMNIST's rule: disjoint x-intervals),
  ordered **left to right** (box centre x, ties by centre y).
- Label ``10 * left + right`` in ``0 .. 99`` (``targets``, int64 ``(N,)``); the two digits
  are kept in ``digits`` (int64 ``(N, 2)``) and their 28×28 frames in ``boxes`` (float32
  ``(N, 2, 4)`` ``(x0, y0, x1, y1)`` pixels, left digit first): the part annotations of
  the proxy (:func:`glimpse.parts_metrics.digit_hits`).
- Clutter: ``num_clutter`` patches of ``clutter_size``² cut from random digits of the split.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np

from glimpse.data.mnist import DIGIT_SIZE, check_int
from glimpse.data.synthetic import Arrays, MultiMNIST, SyntheticMNIST, add_clutter, parse_canvas

__all__ = ["TwoDigitMNIST"]


class TwoDigitMNIST(MultiMNIST):
    """Two digits on a cluttered canvas, labelled ``10 * left + right`` (100 classes).

    Args:
        canvas: side of a square canvas, or ``(H, W)``; ``W >= 56``.
        num_clutter: clutter patches per image (``>= 0``).
        clutter_size: side of each patch, ``1 .. 28``.
        Others: as :class:`~glimpse.data.TranslatedMNIST`.

    Attributes:
        targets: int64 ``(N,)`` class ``10 * left + right``.
        digits: int64 ``(N, 2)`` the digits, left to right.
        boxes: float32 ``(N, 2, 4)`` their frames, left to right.
    """

    kind = "twodigit"
    classes = tuple(f"{i:02d}" for i in range(100))

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        split: str = "train",
        canvas: int | tuple[int, int] = 100,
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
        self.num_clutter = check_int("num_clutter", num_clutter, 0)
        self.clutter_size = check_int("clutter_size", clutter_size, 1, DIGIT_SIZE)
        self.num_digits = 2
        # MultiMNIST's placement and shapes, with the clutter parameters in the cache key.
        SyntheticMNIST.__init__(
            self,
            root=root,
            split=split,
            canvas=parse_canvas(canvas, min_width=DIGIT_SIZE * 2),
            seed=seed,
            val_size=val_size,
            split_seed=split_seed,
            download=download,
            transform=transform,
            target_transform=target_transform,
            cache=cache,
            limit=limit,
            params={"num_digits": 2, "num_clutter": num_clutter, "clutter_size": clutter_size},
        )
        # The cache holds the (N, 2) digits (SyntheticMNIST's checks apply); the class is
        # derived from them.
        self.digits = self.targets
        self.targets = self.digits[:, 0] * 10 + self.digits[:, 1]

    def _generate(
        self, images: np.ndarray, labels: np.ndarray, n: int, rng: np.random.Generator
    ) -> Arrays:
        data, digits, boxes = super()._generate(images, labels, n, rng)
        clutter = add_clutter(data, images, self.num_clutter, self.clutter_size, rng, self.split)
        self._extras["clutter_boxes"] = clutter
        return data, digits, boxes

    def _extra_shapes(self, n: int) -> dict[str, tuple[int, ...]]:
        return {"clutter_boxes": (n, self.num_clutter, 4)}
