"""Where episodes and batches get their images: a dataset held as one tensor on a device
(:class:`ImageSource`), and the order images are drawn in (:class:`IndexStream`).

Shared by the glimpse envs (:mod:`envs`) and the soft trainer
(:mod:`soft_baselines.train`), so both see the same splits the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from glimpse.data.registry import get_dataset

__all__ = ["ImageSource", "IndexStream"]


@dataclass
class ImageSource:
    """Images and labels of a dataset, for drawing episodes.

    Attributes:
        images: ``(N, C, H, W)`` uint8 (or float in ``[0, 1]``) on the env's device.
        labels: ``(N,)`` or ``(N, num_targets)`` long.
        boxes: optional ``(N, 4)`` / ``(N, num_targets, 4)`` pixel boxes of the objects.
    """

    images: Tensor
    labels: Tensor
    boxes: Tensor | None = None

    def __post_init__(self) -> None:
        if self.images.ndim == 3:
            self.images = self.images[:, None]
        if self.images.ndim != 4:
            raise ValueError(
                f"images must be (N, H, W) or (N, C, H, W), got {tuple(self.images.shape)}"
            )
        if self.labels.shape[0] != self.images.shape[0]:
            raise ValueError(f"{self.images.shape[0]} images but {self.labels.shape[0]} labels")
        if len(self) == 0:
            raise ValueError("the image source is empty")

    @classmethod
    def from_any(
        cls,
        source: Any,
        split: str = "train",
        data_root: str | None = None,
        device: torch.device | str = "cpu",
        dataset_kwargs: dict[str, Any] | None = None,
    ) -> ImageSource:
        """Build from a dataset name (see :func:`glimpse.data.get_dataset`), a dataset with
        ``.data`` and ``.targets`` (torchvision MNIST-style), an ``(images, labels)`` pair,
        or an :class:`ImageSource`."""
        if isinstance(source, ImageSource):
            return source.to(device)
        if isinstance(source, str):
            source = get_dataset(source, split=split, root=data_root, **(dataset_kwargs or {}))
        if isinstance(source, tuple) and len(source) == 2:
            images, labels, boxes = source[0], source[1], None
        elif hasattr(source, "data") and hasattr(source, "targets"):
            images, labels = source.data, source.targets
            boxes = getattr(source, "boxes", None)
        else:
            raise ValueError(
                "source must be a dataset name, a dataset with .data/.targets, or an "
                f"(images, labels) pair; got {type(source).__name__}"
            )
        images = torch.as_tensor(images)
        labels = torch.as_tensor(labels).long()
        boxes = None if boxes is None else torch.as_tensor(boxes).float()
        return cls(images, labels, boxes).to(device)

    def to(self, device: torch.device | str) -> ImageSource:
        """This source with its tensors on ``device``."""
        boxes = None if self.boxes is None else self.boxes.to(device)
        return ImageSource(self.images.to(device), self.labels.to(device), boxes)

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)``."""
        c, h, w = self.images.shape[1:]
        return (int(c), int(h), int(w))

    @property
    def num_targets(self) -> int:
        """Labels per image (1 for classification, ``n`` for multi-digit sequences)."""
        return 1 if self.labels.ndim == 1 else int(self.labels.shape[1])

    def get(self, index: Tensor | slice) -> tuple[Tensor, Tensor]:
        """Float images in ``[0, 1]`` ``(n, C, H, W)`` and labels for ``index`` (indices or
        a slice; with a slice, float images and the labels may be views of the source)."""
        images = self.images[index]
        # uint8 -> float32 is a new tensor, so it is divided in place.
        images = images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()
        return images, self.labels[index]


class IndexStream:
    """Endless stream of dataset indices: shuffled epochs (``shuffle``) or ``0..N-1`` cycled.

    Randomness comes from a ``torch.Generator`` on the CPU, so the same seed gives the
    same episodes on any device.

    **Data-parallel sharding** (:meth:`shard`, ``rank``/``world_size``): every rank seeds
    the stream with the same seed, so every rank draws the same global order (a fresh
    permutation per epoch); rank ``r`` of ``W`` keeps the strided slice
    ``order[r::W][: N // W]``. The shards of one epoch are disjoint, equally long (the
    ``N mod W`` leftover images, different ones each shuffled epoch, sit that epoch out)
    and deterministic given the seed, and the ``W`` ranks' first ``B`` indices together
    are exactly the first ``W * B`` indices of the unsharded stream: a ``W``-rank job with
    per-rank batch ``B`` reads the same images per step as one process with batch ``W * B``
    (within an epoch). Generated datasets (translated, cluttered, multi-digit) are built
    from a fixed seed, so every rank holds the same dataset and simply takes its shard.
    ``world_size=1`` is the plain stream, bit for bit.
    """

    def __init__(
        self,
        size: int,
        shuffle: bool = True,
        seed: int | None = None,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.size = size
        self.shuffle = shuffle
        self.generator = torch.Generator()
        self._set_shard(rank, world_size)
        self.seed(seed)

    def _set_shard(self, rank: int, world_size: int) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(
                f"need world_size >= 1 and 0 <= rank < world_size, got rank={rank}, "
                f"world_size={world_size}"
            )
        if self.size // world_size < 1:
            raise ValueError(f"{self.size} images cannot be shared among {world_size} ranks")
        self.rank, self.world_size = int(rank), int(world_size)

    @property
    def shard_size(self) -> int:
        """Indices per epoch on this rank (``size`` unsharded)."""
        return self.size // self.world_size

    def shard(self, rank: int, world_size: int) -> IndexStream:
        """Make this rank ``rank`` of ``world_size`` (class docstring); restarts the current
        epoch's order from the generator's present state. Returns ``self``."""
        self._set_shard(rank, world_size)
        self._order, self._pos = self._new_order(), 0
        return self

    def seed(self, seed: int | None) -> None:
        """Restart the stream from ``seed`` (a fresh random seed if ``None``)."""
        if seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(int(seed))
        self._order = self._new_order()
        self._pos = 0

    def _new_order(self) -> Tensor:
        if self.shuffle:
            order = torch.randperm(self.size, generator=self.generator)
        else:
            order = torch.arange(self.size)
        if self.world_size == 1:
            return order
        return order[self.rank :: self.world_size][: self.shard_size].clone()

    def state_dict(self) -> dict[str, Tensor | int]:
        """The stream's position, for checkpoints (tensors and ints only)."""
        return {"rng": self.generator.get_state(), "order": self._order.clone(), "pos": self._pos}

    def load_state_dict(self, state: dict[str, Tensor | int]) -> None:
        """Continue exactly where :meth:`state_dict` was taken (on this rank's shard)."""
        order = state["order"]
        if not isinstance(order, Tensor) or order.shape != (self.shard_size,):
            raise ValueError(
                f"stream state is for another dataset size or number of ranks (expected "
                f"{self.shard_size} indices per epoch, {self.size} images on "
                f"{self.world_size} rank(s))"
            )
        self.generator.set_state(state["rng"])
        self._order, self._pos = order.clone(), int(state["pos"])

    def next(self, n: int) -> Tensor:
        """The next ``n`` indices (CPU long tensor)."""
        out = []
        per_epoch = self.shard_size
        while n > 0:
            if self._pos >= per_epoch:
                self._order, self._pos = self._new_order(), 0
            take = min(n, per_epoch - self._pos)
            out.append(self._order[self._pos : self._pos + take])
            self._pos += take
            n -= take
        return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)
