"""MNIST with a held-out validation split, torchvision-style.

The RAM paper (Mnih et al. 2014, "Recurrent Models of Visual Attention") trains on MNIST
and on datasets generated from it (:mod:`glimpse.data.synthetic`). Model selection needs a
validation set that is not the official test set, so ``val`` is held out of the official
60 000 training images by a seeded permutation: the same ``split_seed`` and ``val_size``
always give the same, disjoint ``train`` / ``val`` pair.
"""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from glimpse.data.paths import HOW_TO_GET_DATA, DatasetNotFoundError, resolve_root

SPLITS = ("train", "val", "test")
MNIST_CLASSES = (
    "0 - zero",
    "1 - one",
    "2 - two",
    "3 - three",
    "4 - four",
    "5 - five",
    "6 - six",
    "7 - seven",
    "8 - eight",
    "9 - nine",
)
MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
DIGIT_SIZE = 28


def check_split(split: str) -> str:
    """Return ``split`` if it is one of ``train``, ``val``, ``test``; else raise ValueError."""
    if split not in SPLITS:
        raise ValueError(f"split={split!r} is not valid; expected one of {SPLITS}")
    return split


def check_int(name: str, value: Any, low: int, high: int | None = None) -> int:
    """Return ``value`` if it is an int in ``[low, high]``; else raise ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{name}={value!r} must be an int")
    if value < low or (high is not None and value > high):
        upper = "" if high is None else f" and <= {high}"
        raise ValueError(f"{name}={value!r} must be >= {low}{upper}")
    return int(value)


class DigitDataset(Dataset):
    """Grey-scale images with targets, indexed torchvision-style.

    Attributes:
        data: ``uint8`` tensor ``(N, H, W)``.
        targets: ``int64`` tensor ``(N,)``, or ``(N, k)`` for multi-digit images.
        classes: class names, index = label.
        transform: applied to the PIL image (mode ``"L"``) in ``__getitem__``.
        target_transform: applied to the target in ``__getitem__``.
    """

    classes: tuple[str, ...] = MNIST_CLASSES

    def __init__(
        self,
        data: torch.Tensor,
        targets: torch.Tensor,
        transform: Callable | None = None,
        target_transform: Callable | None = None,
    ) -> None:
        if data.dtype != torch.uint8 or data.ndim != 3:
            raise ValueError(
                f"data must be a uint8 tensor (N, H, W); got {data.dtype} {tuple(data.shape)}"
            )
        if targets.dtype != torch.int64 or len(targets) != len(data):
            raise ValueError(
                f"targets must be int64 with {len(data)} rows; "
                f"got {targets.dtype} {tuple(targets.shape)}"
            )
        self.data = data
        self.targets = targets
        self.transform = transform
        self.target_transform = target_transform

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        """``(image, target)``: a PIL image (or ``transform`` of it) and an int label
        (a length-``k`` int64 tensor for multi-digit images), or ``target_transform`` of it."""
        img = Image.fromarray(self.data[index].numpy())
        t = self.targets[index]
        target: Any = int(t) if t.ndim == 0 else t.clone()
        if self.transform is not None:
            img = self.transform(img)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return img, target

    def _extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        h, w = self.data.shape[1:]
        extra = self._extra_repr()
        return f"{type(self).__name__}(n={len(self)}, image={h}x{w}{', ' + extra if extra else ''})"


class MNISTSplit(DigitDataset):
    """One split of MNIST: ``train`` / ``val`` (held out of the official train set) / ``test``.

    Built by :func:`load_mnist`. Besides :class:`DigitDataset`'s attributes:

    Attributes:
        split: ``"train"``, ``"val"`` or ``"test"``.
        indices: ``int64 (N,)``, the rows of the official file (train file for
            ``train``/``val``, test file for ``test``) that this split holds, ascending.
    """

    def __init__(
        self,
        data: torch.Tensor,
        targets: torch.Tensor,
        split: str,
        indices: torch.Tensor,
        transform: Callable | None = None,
        target_transform: Callable | None = None,
    ) -> None:
        super().__init__(data, targets, transform, target_transform)
        self.split = check_split(split)
        self.indices = indices

    def _extra_repr(self) -> str:
        return f"split={self.split!r}"


def _idx_problem(path: str, ndim: int) -> str | None:
    """What is wrong with the IDX file of unsigned bytes at ``path`` (``ndim`` dimensions:
    1 for labels, 3 for images), or ``None`` if its header and size are right.

    The format (LeCun et al.): a big-endian magic number ``0x0000 08 <ndim>``, then
    ``ndim`` big-endian uint32 sizes, then ``prod(sizes)`` bytes.
    """
    kind = "label" if ndim == 1 else "image"
    want = 0x0800 + ndim
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            header = f.read(4 + 4 * ndim)
    except OSError as err:
        return f"unreadable: {err.strerror or err}"
    if len(header) < 4:
        return f"{size} bytes, too short for the 4-byte IDX magic number"
    magic = int.from_bytes(header[:4], "big")
    if magic != want:
        return f"bad magic number 0x{magic:08x}, expected 0x{want:08x} for an IDX {kind} file"
    if len(header) < 4 + 4 * ndim:
        return f"{size} bytes, too short for the {4 + 4 * ndim}-byte header"
    dims = struct.unpack(f">{ndim}I", header[4:])
    expected = 4 + 4 * ndim + math.prod(dims)
    if size != expected:
        shape = " x ".join(map(str, dims))
        return f"{size} bytes, but its header promises {shape} values, {expected} bytes"
    return None


def _read_official(root: os.PathLike[str], train: bool, download: bool) -> tuple[Any, Any]:
    """The official train or test file as ``(uint8 (N, 28, 28), int64 (N,))``.

    Every failure (missing files, failed download, corrupt IDX file) becomes a
    :class:`DatasetNotFoundError` that names the file or folder and says how to get the data.
    """
    from torchvision.datasets import MNIST
    from torchvision.datasets.mnist import read_image_file, read_label_file

    raw = os.path.join(os.fspath(root), "MNIST", "raw")
    missing = [f for f in MNIST_FILES if not os.path.isfile(os.path.join(raw, f))]
    if missing and download:
        try:
            MNIST(os.fspath(root), train=train, download=True)
        except Exception as err:  # network errors, checksum mismatch, unreadable download
            raise DatasetNotFoundError(
                f"MNIST could not be downloaded into {raw}: {err}. Put the four raw IDX "
                f"files there by hand, or pass --data-root / set GLIMPSE_DATA to a copy."
            ) from err
        missing = [f for f in MNIST_FILES if not os.path.isfile(os.path.join(raw, f))]
    if missing:
        raise DatasetNotFoundError(
            f"MNIST not found: {raw} lacks {', '.join(missing)}. "
            f"Put the four raw IDX files of MNIST in {raw}, or {HOW_TO_GET_DATA}."
        )
    prefix = "train" if train else "t10k"
    arrays = []
    for kind, reader in (("images-idx3", read_image_file), ("labels-idx1", read_label_file)):
        path = os.path.join(raw, f"{prefix}-{kind}-ubyte")
        why = _idx_problem(path, ndim=int(kind[-1]))
        if why is None:
            try:
                arrays.append(reader(path))
            except (RuntimeError, AssertionError, ValueError, TypeError, KeyError, OSError) as err:
                why = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
        if why is not None:
            raise DatasetNotFoundError(
                f"MNIST file {path} is corrupt or not an IDX file ({why}). Replace it with a "
                f"good copy, or {HOW_TO_GET_DATA}."
            )
    data, targets = arrays
    n = len(data)
    if (
        tuple(data.shape[1:]) != (DIGIT_SIZE, DIGIT_SIZE)
        or targets.shape != (n,)
        or (n and (int(targets.min()) < 0 or int(targets.max()) > 9))
    ):
        raise DatasetNotFoundError(
            f"MNIST files {prefix}-* in {raw} do not match: images {tuple(data.shape)}, labels "
            f"{tuple(targets.shape)}; expected (N, 28, 28) images and N labels in 0..9. "
            f"Replace them with a good copy, or {HOW_TO_GET_DATA}."
        )
    return data, targets.to(torch.int64)


def split_indices(n: int, val_size: int, split_seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Ascending ``(train, val)`` row indices of ``n`` official training images.

    ``val`` is the first ``val_size`` entries of a permutation drawn from a generator seeded
    with ``split_seed``; ``train`` is the rest. Deterministic and disjoint.
    """
    check_int("val_size", val_size, 0, n - 1)
    gen = torch.Generator().manual_seed(check_int("split_seed", split_seed, 0))
    perm = torch.randperm(n, generator=gen)
    val = perm[:val_size].sort().values
    train = perm[val_size:].sort().values
    return train, val


def load_mnist(
    root: str | os.PathLike[str] | None = None,
    split: str = "train",
    val_size: int = 5000,
    split_seed: int = 0,
    download: bool = False,
    transform: Callable | None = None,
    target_transform: Callable | None = None,
) -> MNISTSplit:
    """One MNIST split as an :class:`MNISTSplit`.

    Args:
        root: folder holding ``MNIST/raw`` (torchvision layout); ``None`` means
            :func:`~glimpse.data.default_root`.
        split: ``"train"`` (official train minus ``val``), ``"val"`` (``val_size`` images
            held out of the official train set), or ``"test"`` (the official test set).
        val_size: how many official training images to hold out; 0 keeps them all in
            ``train`` (then ``split="val"`` is an error).
        split_seed: seed of the permutation choosing the held-out images.
        download: fetch MNIST through torchvision if it is missing.
        transform: applied to each PIL image.
        target_transform: applied to each int label.

    Raises:
        ValueError: unknown ``split``, bad ``val_size`` or ``split_seed``.
        DatasetNotFoundError: MNIST missing or corrupt under ``root``.
    """
    check_split(split)
    check_int("val_size", val_size, 0)
    check_int("split_seed", split_seed, 0)
    if split == "val" and val_size == 0:
        raise ValueError("split='val' needs val_size > 0; got val_size=0")
    root = resolve_root(root)
    data, targets = _read_official(root, train=split != "test", download=download)
    if split == "test":
        idx = torch.arange(len(data))
    else:
        train_idx, val_idx = split_indices(len(data), val_size, split_seed)
        idx = train_idx if split == "train" else val_idx
        data, targets = data[idx], targets[idx]
    return MNISTSplit(data, targets, split, idx, transform, target_transform)
