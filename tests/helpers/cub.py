"""A tiny CUB-200-2011 in the exact official layout, with known annotations, for tests.

``make_tiny_cub(root)`` writes ``root/CUB_200_2011/...`` (the file formats of Wah et al.
2011: 1-based ids, boxes as ``x y width height``, parts as ``x y visible`` with invisible
parts at ``0.0 0.0 0``) filled with random JPEGs, and returns what it wrote so tests can
compare against it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from glimpse.data.transforms import CUB_PART_NAMES

PART_NAMES = CUB_PART_NAMES  # parts/parts.txt of the official release, 0-based
CLASS_NAMES = ("Black_footed_Albatross", "Laysan_Albatross", "Sooty_Albatross", "Groove_billed_Ani")


@dataclass
class TinyCub:
    """What :func:`make_tiny_cub` wrote; row ``i`` is the image with official id ``i + 1``."""

    root: Path
    classes: list[str]
    paths: list[str] = field(default_factory=list)  # relative to CUB_200_2011/images
    labels: list[int] = field(default_factory=list)  # 0-based
    is_train: list[bool] = field(default_factory=list)
    sizes: list[tuple[int, int]] = field(default_factory=list)  # (width, height)
    boxes_xywh: list[tuple[float, float, float, float]] = field(default_factory=list)
    parts: list[np.ndarray] = field(default_factory=list)  # (15, 3): x, y, visible

    def ids(self, train: bool) -> list[int]:
        """Official 1-based ids of the train or test images, ascending."""
        return [i + 1 for i, t in enumerate(self.is_train) if t == train]


def make_tiny_cub(
    root: Path, num_classes: int = 3, images_per_class: int = 4, seed: int = 0
) -> TinyCub:
    """Write a tiny CUB-200-2011 under ``root/CUB_200_2011`` and return its contents.

    Images are random RGB JPEGs of random non-square sizes (the last one grey-scale, as some
    real CUB images are); every other image of a class is a training image; boxes lie
    inside the image; each part is visible with probability 0.7 at an integer position.
    """
    rng = np.random.default_rng(seed)
    top = root / "CUB_200_2011"
    (top / "parts").mkdir(parents=True, exist_ok=True)
    cub = TinyCub(root=root, classes=list(CLASS_NAMES[:num_classes]))
    class_dirs = [f"{c + 1:03d}.{name}" for c, name in enumerate(cub.classes)]
    for c, class_dir in enumerate(class_dirs):
        (top / "images" / class_dir).mkdir(parents=True, exist_ok=True)
        for k in range(images_per_class):
            w, h = int(rng.integers(40, 90)), int(rng.integers(40, 90))
            rel = f"{class_dir}/{cub.classes[c]}_{k:04d}_{rng.integers(1, 99999)}.jpg"
            pixels = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
            image = Image.fromarray(pixels)
            if c == num_classes - 1 and k == images_per_class - 1:
                image = image.convert("L")
            image.save(top / "images" / rel, quality=90)
            x0, y0 = int(rng.integers(0, w // 2)), int(rng.integers(0, h // 2))
            bw, bh = int(rng.integers(5, w - x0)), int(rng.integers(5, h - y0))
            visible = rng.random(len(PART_NAMES)) < 0.7
            xy = np.stack(
                [rng.integers(0, w, len(PART_NAMES)), rng.integers(0, h, len(PART_NAMES))]
            )
            parts = np.concatenate([xy.T, np.ones((len(PART_NAMES), 1))], 1) * visible[:, None]
            cub.paths.append(rel)
            cub.labels.append(c)
            cub.is_train.append(k % 2 == 0)
            cub.sizes.append((w, h))
            cub.boxes_xywh.append((float(x0), float(y0), float(bw), float(bh)))
            cub.parts.append(parts.astype(np.float32))

    def write(name: str, lines: list[str]) -> None:
        (top / name).write_text("".join(line + "\n" for line in lines))

    ids = range(1, len(cub.paths) + 1)
    write("classes.txt", [f"{c + 1} {d}" for c, d in enumerate(class_dirs)])
    write("images.txt", [f"{i} {p}" for i, p in zip(ids, cub.paths, strict=True)])
    write("image_class_labels.txt", [f"{i} {c + 1}" for i, c in zip(ids, cub.labels, strict=True)])
    write("train_test_split.txt", [f"{i} {int(t)}" for i, t in zip(ids, cub.is_train, strict=True)])
    write(
        "bounding_boxes.txt",
        [f"{i} {x} {y} {bw} {bh}" for i, (x, y, bw, bh) in zip(ids, cub.boxes_xywh, strict=True)],
    )
    write("parts/parts.txt", [f"{p + 1} {name}" for p, name in enumerate(PART_NAMES)])
    write(
        "parts/part_locs.txt",
        [
            f"{i} {p + 1} {float(x)} {float(y)} {int(v)}"
            for i, parts in zip(ids, cub.parts, strict=True)
            for p, (x, y, v) in enumerate(parts)
        ],
    )
    return cub
