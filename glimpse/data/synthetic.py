"""Translated, cluttered and multi-digit MNIST, generated in one vectorised pass and cached.

Following Mnih et al. 2014, "Recurrent Models of Visual Attention" (RAM), section 4.1:

- :class:`TranslatedMNIST`: each 28×28 digit placed at a uniformly random position fully
  inside a larger blank canvas (the paper: 60×60).
- :class:`ClutteredMNIST`: as translated, plus ``num_clutter`` ``clutter_size``² patches cut
  from random positions of *other* random digits of the same split and pasted at uniformly
  random positions (the paper: 4 patches of 8×8 on 60×60, and 8 on 100×100, i.e.
  ``ClutteredMNIST(canvas=100, num_clutter=8)``).

Following Ba et al. 2015, "Multiple Object Recognition with Visual Attention" (DRAM):

- :class:`MultiMNIST`: ``num_digits`` digits at random non-overlapping positions; the target
  is the sequence of labels read left to right.

Conventions shared by all three:

- Source digits come from :func:`~glimpse.data.load_mnist` with the same ``split``,
  ``val_size`` and ``split_seed``, so synthetic ``train``/``val``/``test`` are built from
  disjoint digits. Image ``i`` of translated/cluttered MNIST is source digit ``i`` (targets
  equal the source targets).
- Overlapping pixels are combined with ``max`` (digit over clutter, clutter over clutter,
  digit over digit), so no stroke ever erases another.
- Boxes are float32 pixel-edge coordinates ``(x0, y0, x1, y1)`` of the pasted 28×28 frame:
  pixel columns ``x0 .. x1 - 1`` and rows ``y0 .. y1 - 1`` (``x1 = x0 + 28``). They bound the
  frame, not the ink.
- Randomness comes from a NumPy generator seeded with ``(seed, split)``: the three splits
  differ, and the same parameters give byte-identical arrays. All random draws are made
  for the whole split before anything is sliced, so ``limit=n`` gives exactly the first
  ``n`` images of the full split.
- Results are cached under ``cache_dir()/synthetic`` in a file named by a hash of every
  parameter, a fingerprint of the source digits and :data:`FORMAT_VERSION`. Files are
  written atomically; one that fails to load or does not match is regenerated (with a
  ``RuntimeWarning``).
"""

from __future__ import annotations

import abc
import hashlib
import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view

from glimpse.data.mnist import (
    DIGIT_SIZE,
    SPLITS,
    DigitDataset,
    check_int,
    check_split,
    load_mnist,
)
from glimpse.data.paths import atomic_torch_save, cache_dir

FORMAT_VERSION = 2
"""Bump whenever generation or the cache layout changes, so that old cache files are no
longer used (2: cluttered sets also store their clutter patches' boxes; pixels unchanged)."""

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray]


def parse_canvas(canvas: int | tuple[int, int], min_width: int = DIGIT_SIZE) -> tuple[int, int]:
    """``canvas`` (an int for a square, or ``(H, W)``) as ``(H, W)``.

    Raises ValueError unless ``H >= 28`` and ``W >= min_width``.
    """
    if isinstance(canvas, int | np.integer) and not isinstance(canvas, bool):
        hw: tuple[Any, ...] = (canvas, canvas)
    elif isinstance(canvas, tuple | list) and len(canvas) == 2:
        hw = tuple(canvas)
    else:
        raise ValueError(f"canvas={canvas!r} must be an int or a pair (H, W) of ints")
    if any(isinstance(v, bool) or not isinstance(v, int | np.integer) for v in hw):
        raise ValueError(f"canvas={canvas!r} must be an int or a pair (H, W) of ints")
    h, w = int(hw[0]), int(hw[1])
    if h < DIGIT_SIZE or w < min_width:
        raise ValueError(
            f"canvas={canvas!r} is too small: need height >= {DIGIT_SIZE} and "
            f"width >= {min_width} to hold the digits"
        )
    return h, w


def left_to_right(boxes: np.ndarray) -> np.ndarray:
    """Indices sorting boxes ``(..., k, 4)`` by centre x, ties by centre y (both ascending).

    Returns an int array ``(..., k)``; use ``np.take_along_axis`` to reorder.
    """
    cx = boxes[..., 0] + boxes[..., 2]
    cy = boxes[..., 1] + boxes[..., 3]
    return np.lexsort((cy, cx), axis=-1)


def _windows(images: np.ndarray, size: int, writeable: bool = False) -> np.ndarray:
    """View ``(N, H - size + 1, W - size + 1, size, size)`` of every square window."""
    return sliding_window_view(images, (size, size), axis=(1, 2), writeable=writeable)


def _paste_max(canvas: np.ndarray, patches: np.ndarray, y: np.ndarray, x: np.ndarray) -> None:
    """In place, for every ``i`` at once: ``canvas[i, y:y+s, x:x+s] = max(itself, patches[i])``.

    One window per image, so the writes through the window view never overlap.
    """
    win = _windows(canvas, patches.shape[-1], writeable=True)
    rows = np.arange(len(canvas))
    win[rows, y, x] = np.maximum(win[rows, y, x], patches)


def _frame_boxes(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Boxes ``(..., 4)`` of 28×28 frames with top-left corners ``(x, y)``."""
    return np.stack([x, y, x + DIGIT_SIZE, y + DIGIT_SIZE], axis=-1).astype(np.float32)


class SyntheticMNIST(DigitDataset, abc.ABC):
    """Base of the generated MNIST datasets: loads the source split, generates, caches.

    Subclasses set :attr:`kind`, pass their own parameters to ``__init__`` and implement
    :meth:`_generate`. See the module docstring for the shared conventions.

    Attributes:
        data: ``uint8 (N, H, W)``.
        targets: ``int64 (N,)`` or ``(N, num_digits)``.
        boxes: ``float32 (N, 4)`` or ``(N, num_digits, 4)``, ``(x0, y0, x1, y1)`` pixels.
        split, seed, canvas: as given (``canvas`` as ``(H, W)``).
        from_cache: whether the arrays were read from the cache rather than generated.
        cache_path: the cache file (``None`` with ``cache=False``).
    """

    kind = "synthetic"

    def __init__(
        self,
        *,
        root: str | os.PathLike[str] | None,
        split: str,
        canvas: tuple[int, int],
        seed: int,
        val_size: int,
        split_seed: int,
        download: bool,
        transform: Callable | None,
        target_transform: Callable | None,
        cache: bool,
        limit: int | None,
        params: dict[str, Any],
    ) -> None:
        check_split(split)
        check_int("seed", seed, 0)
        if limit is not None:
            limit = check_int("limit", limit, 1)
        self.split = split
        self.seed = int(seed)
        self.canvas = canvas
        source = load_mnist(
            root, split, val_size=val_size, split_seed=split_seed, download=download
        )
        images, labels = source.data.numpy(), source.targets.numpy()
        n = len(images) if limit is None else min(limit, len(images))
        fingerprint = hashlib.sha256(np.ascontiguousarray(images))
        fingerprint.update(np.ascontiguousarray(labels))
        self.params = {
            "kind": self.kind,
            "format": FORMAT_VERSION,
            "split": split,
            "seed": self.seed,
            "canvas": list(canvas),
            "n": n,
            "source_sha256": fingerprint.hexdigest(),
            **params,
        }
        self._params_json = json.dumps(self.params, sort_keys=True)
        key = hashlib.sha256(self._params_json.encode()).hexdigest()
        self.cache_path: Path | None = (
            cache_dir() / "synthetic" / f"{self.kind}-{split}-{key[:24]}.pt" if cache else None
        )
        arrays = self._read_cache() if self.cache_path is not None else None
        self.from_cache = arrays is not None
        if arrays is None:
            rng = np.random.default_rng([self.seed, SPLITS.index(split)])
            self._extras = {}
            data, targets, boxes = self._generate(images, labels, n, rng)
            arrays = (
                torch.from_numpy(np.ascontiguousarray(data)),
                torch.from_numpy(np.ascontiguousarray(targets, dtype=np.int64)),
                torch.from_numpy(np.ascontiguousarray(boxes, dtype=np.float32)),
                {
                    k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32))
                    for k, v in self._extras.items()
                },
            )
            self._write_cache(*arrays)
        super().__init__(arrays[0], arrays[1], transform, target_transform)
        self.boxes = arrays[2]
        for name, value in arrays[3].items():
            setattr(self, name, value)

    @abc.abstractmethod
    def _generate(
        self, images: np.ndarray, labels: np.ndarray, n: int, rng: np.random.Generator
    ) -> Arrays:
        """``(data (n, H, W) uint8, targets, boxes)`` from the source split.

        Draw every random quantity for all ``len(images)`` images, then use the first ``n``.
        """

    def _target_shape(self, n: int) -> tuple[int, ...]:
        return (n,)

    def _extra_shapes(self, n: int) -> dict[str, tuple[int, ...]]:
        """Float32 arrays beside data/targets/boxes that :meth:`_generate` records in
        ``self._extras`` and the cache stores (name -> shape); they become attributes."""
        return {}

    def _check_payload(self, payload: Any) -> str | None:
        """Why ``payload`` is not a valid cache entry for this dataset, or ``None`` if it is."""
        if not isinstance(payload, dict):
            return f"expected a dict, got {type(payload).__name__}"
        if payload.get("params") != self._params_json:
            return "parameters differ"
        n = self.params["n"]
        expected = {
            "data": (torch.uint8, (n, *self.canvas)),
            "targets": (torch.int64, self._target_shape(n)),
            "boxes": (torch.float32, (*self._target_shape(n), 4)),
            **{k: (torch.float32, s) for k, s in self._extra_shapes(n).items()},
        }
        for name, (dtype, shape) in expected.items():
            t = payload.get(name)
            if not isinstance(t, torch.Tensor) or t.dtype != dtype or tuple(t.shape) != shape:
                got = (t.dtype, tuple(t.shape)) if isinstance(t, torch.Tensor) else type(t)
                return f"{name}: expected {dtype} {shape}, got {got}"
        targets = payload["targets"]
        if n and (int(targets.min()) < 0 or int(targets.max()) > 9):
            return "targets outside 0..9"
        return None

    def _read_cache(self) -> tuple[Any, ...] | None:
        path = self.cache_path
        if path is None or not path.is_file():
            return None
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # any unreadable file is a cache miss, not a failure
            problem: str | None = f"{type(err).__name__}: {err}"
        else:
            problem = self._check_payload(payload)
        if problem is not None:
            warnings.warn(
                f"ignoring corrupt cache file {path} ({problem}); regenerating it",
                RuntimeWarning,
                stacklevel=3,
            )
            return None
        extras = {k: payload[k] for k in self._extra_shapes(self.params["n"])}
        return payload["data"], payload["targets"], payload["boxes"], extras

    def _write_cache(
        self,
        data: torch.Tensor,
        targets: torch.Tensor,
        boxes: torch.Tensor,
        extras: dict[str, torch.Tensor],
    ) -> None:
        if self.cache_path is None:
            return
        payload = {
            "params": self._params_json,
            "data": data,
            "targets": targets,
            "boxes": boxes,
            **extras,
        }
        try:
            atomic_torch_save(payload, self.cache_path)
        except OSError as err:  # e.g. read-only or full disk: the data is still usable
            warnings.warn(
                f"could not write cache file {self.cache_path} ({err}); continuing without it",
                RuntimeWarning,
                stacklevel=3,
            )

    def _extra_repr(self) -> str:
        return f"split={self.split!r}, seed={self.seed}"


def _translate(
    images: np.ndarray,
    labels: np.ndarray,
    n: int,
    canvas: tuple[int, int],
    rng: np.random.Generator,
) -> Arrays:
    """Digits ``0 .. n-1`` each at a uniformly random position fully inside the canvas."""
    h, w = canvas
    total = len(images)
    y = rng.integers(0, h - DIGIT_SIZE + 1, size=total)[:n]
    x = rng.integers(0, w - DIGIT_SIZE + 1, size=total)[:n]
    data = np.zeros((n, h, w), dtype=np.uint8)
    _paste_max(data, images[:n], y, x)
    return data, labels[:n], _frame_boxes(x, y)


class TranslatedMNIST(SyntheticMNIST):
    """Translated MNIST (Mnih et al. 2014, RAM): each digit at a uniformly random position.

    The 28×28 digit's top-left corner is a uniform random integer position such that the
    digit lies fully inside the blank canvas.

    Args:
        root: folder holding ``MNIST/raw``; ``None`` means :func:`~glimpse.data.default_root`.
        split: ``"train"``, ``"val"`` or ``"test"`` (see :func:`~glimpse.data.load_mnist`).
        canvas: side of a square canvas, or ``(H, W)``; both at least 28.
        seed: generation seed (``>= 0``); combined with ``split``.
        val_size, split_seed, download: passed to :func:`~glimpse.data.load_mnist`.
        transform: applied to each PIL image (mode ``"L"``).
        target_transform: applied to each int label.
        cache: read and write the on-disk cache under :func:`~glimpse.data.cache_dir`.
        limit: generate only the first ``limit`` images of the split (identical to the
            first ``limit`` of the full split); ``None`` for all. Meant for tests and quick
            experiments.
    """

    kind = "translated"

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        split: str = "train",
        canvas: int | tuple[int, int] = 60,
        seed: int = 0,
        val_size: int = 5000,
        split_seed: int = 0,
        download: bool = False,
        transform: Callable | None = None,
        target_transform: Callable | None = None,
        cache: bool = True,
        limit: int | None = None,
    ) -> None:
        super().__init__(
            root=root,
            split=split,
            canvas=parse_canvas(canvas),
            seed=seed,
            val_size=val_size,
            split_seed=split_seed,
            download=download,
            transform=transform,
            target_transform=target_transform,
            cache=cache,
            limit=limit,
            params={},
        )

    def _generate(
        self, images: np.ndarray, labels: np.ndarray, n: int, rng: np.random.Generator
    ) -> Arrays:
        return _translate(images, labels, n, self.canvas, rng)


class ClutteredMNIST(SyntheticMNIST):
    """Cluttered translated MNIST (Mnih et al. 2014, RAM).

    As :class:`TranslatedMNIST` (with the same ``seed`` the digit sits at the same place),
    plus ``num_clutter`` patches of ``clutter_size``×``clutter_size`` pixels, each cut from
    a uniformly random position of a uniformly random *other* digit of the same split and
    pasted at a uniformly random position fully inside the canvas. Clutter may overlap the
    digit and other clutter; pixels are combined with ``max``.

    Defaults are 4 patches of 8×8 on 60×60; the paper's harder setting is 8 patches on
    100×100: ``ClutteredMNIST(canvas=100, num_clutter=8)``.

    Besides :attr:`boxes` (the digit's 28×28 frame), :attr:`clutter_boxes` ``float32 (N,
    num_clutter, 4)`` holds each clutter patch's ``(x0, y0, x1, y1)``, so attention on
    clutter can be measured apart from attention on the digit (:mod:`glimpse.attention`).

    Args:
        num_clutter: patches per image (``>= 0``).
        clutter_size: side of each patch, ``1 .. 28``.
        Others: as :class:`TranslatedMNIST`.
    """

    kind = "cluttered"

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        split: str = "train",
        canvas: int | tuple[int, int] = 60,
        num_clutter: int = 4,
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
        super().__init__(
            root=root,
            split=split,
            canvas=parse_canvas(canvas),
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

    def _generate(
        self, images: np.ndarray, labels: np.ndarray, n: int, rng: np.random.Generator
    ) -> Arrays:
        data, targets, boxes = _translate(images, labels, n, self.canvas, rng)
        clutter = add_clutter(data, images, self.num_clutter, self.clutter_size, rng, self.split)
        self._extras["clutter_boxes"] = clutter
        return data, targets, boxes

    def _extra_shapes(self, n: int) -> dict[str, tuple[int, ...]]:
        return {"clutter_boxes": (n, self.num_clutter, 4)}


def add_clutter(
    data: np.ndarray,
    images: np.ndarray,
    num_clutter: int,
    clutter_size: int,
    rng: np.random.Generator,
    split: str = "",
) -> np.ndarray:
    """Paste ``num_clutter`` ``clutter_size``² patches into each of ``data``'s ``n`` canvases,
    in place (:class:`ClutteredMNIST`'s rule); return the patches' boxes ``float32 (n,
    num_clutter, 4)`` as ``(x0, y0, x1, y1)`` pixels.

    Patch ``j`` of image ``i`` is cut from a uniformly random position of source digit
    ``other[i, j] != i`` and pasted at a uniformly random position with ``max``. Random
    draws are made for all ``len(images)`` source digits, then the first ``n`` are used.
    """
    k, s = num_clutter, clutter_size
    total, n = len(images), len(data)
    if k == 0:
        return np.zeros((n, 0, 4), dtype=np.float32)
    if total < 2:
        raise ValueError(f"clutter needs at least 2 source digits; split {split!r} has {total}")
    h, w = data.shape[1:]
    other = rng.integers(0, total - 1, size=(total, k))
    other += other >= np.arange(total)[:, None]  # skip the image's own digit
    src_y = rng.integers(0, DIGIT_SIZE - s + 1, size=(total, k))
    src_x = rng.integers(0, DIGIT_SIZE - s + 1, size=(total, k))
    dst_y = rng.integers(0, h - s + 1, size=(total, k))
    dst_x = rng.integers(0, w - s + 1, size=(total, k))
    source_windows = _windows(images, s)
    for j in range(k):  # one pass per clutter slot, every image at once
        patches = source_windows[other[:n, j], src_y[:n, j], src_x[:n, j]]
        _paste_max(data, patches, dst_y[:n, j], dst_x[:n, j])
    x0, y0 = dst_x[:n], dst_y[:n]
    return np.stack([x0, y0, x0 + s, y0 + s], axis=-1).astype(np.float32)


class MultiMNIST(SyntheticMNIST):
    """Multi-digit MNIST for sequence recognition (Ba et al. 2015, DRAM).

    Each image holds ``num_digits`` uniformly random digits of the split. Placement rule
    (rejection-free by construction): the digits' x-intervals are disjoint, so boxes never
    overlap and the left-to-right order is unambiguous. The left edges are
    ``u_(j) + 28 j`` where ``u_(0) <= ... <= u_(k-1)`` are the sorted values of ``k``
    uniform integers in ``[0, W - 28 k]``; each digit's top edge is uniform in
    ``[0, H - 28]`` independently. Hence ``W >= 28 * num_digits``.

    ``targets`` is ``int64 (N, num_digits)`` and ``boxes`` ``float32 (N, num_digits, 4)``,
    both ordered left to right by box centre x, ties broken by centre y (top first; see
    :func:`left_to_right`). ``N`` is the size of the source split (or ``limit``).

    Args:
        canvas: side of a square canvas, or ``(H, W)``; ``H >= 28``, ``W >= 28 * num_digits``.
        num_digits: digits per image, ``>= 1``.
        Others: as :class:`TranslatedMNIST`.
    """

    kind = "multi"

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        split: str = "train",
        canvas: int | tuple[int, int] = 100,
        num_digits: int = 2,
        seed: int = 0,
        val_size: int = 5000,
        split_seed: int = 0,
        download: bool = False,
        transform: Callable | None = None,
        target_transform: Callable | None = None,
        cache: bool = True,
        limit: int | None = None,
    ) -> None:
        self.num_digits = check_int("num_digits", num_digits, 1)
        super().__init__(
            root=root,
            split=split,
            canvas=parse_canvas(canvas, min_width=DIGIT_SIZE * self.num_digits),
            seed=seed,
            val_size=val_size,
            split_seed=split_seed,
            download=download,
            transform=transform,
            target_transform=target_transform,
            cache=cache,
            limit=limit,
            params={"num_digits": self.num_digits},
        )

    def _target_shape(self, n: int) -> tuple[int, ...]:
        return (n, self.num_digits)

    def _generate(
        self, images: np.ndarray, labels: np.ndarray, n: int, rng: np.random.Generator
    ) -> Arrays:
        h, w = self.canvas
        k, total = self.num_digits, len(images)
        src = rng.integers(0, total, size=(total, k))[:n]
        slack = np.sort(rng.integers(0, w - DIGIT_SIZE * k + 1, size=(total, k)), axis=1)[:n]
        x = slack + DIGIT_SIZE * np.arange(k)
        y = rng.integers(0, h - DIGIT_SIZE + 1, size=(total, k))[:n]
        boxes = _frame_boxes(x, y)
        order = left_to_right(boxes)  # already sorted by construction; kept as the rule
        src = np.take_along_axis(src, order, axis=1)
        boxes = np.take_along_axis(boxes, order[..., None], axis=1)
        x = boxes[..., 0].astype(np.int64)
        y = boxes[..., 1].astype(np.int64)
        data = np.zeros((n, h, w), dtype=np.uint8)
        for j in range(k):  # one pass per digit slot, every image at once
            _paste_max(data, images[src[:, j]], y[:, j], x[:, j])
        return data, labels[src], boxes
