"""CUB-200-2011 (Wah et al. 2011, "The Caltech-UCSD Birds-200-2011 Dataset").

200 bird species, 11 788 images, each with a bounding box and 15 part locations, and the
official train/test split. Read from the official layout::

    <root>/CUB_200_2011/images.txt               <image_id> <class dir>/<file>.jpg
    <root>/CUB_200_2011/classes.txt              <class_id> <NNN.Name>
    <root>/CUB_200_2011/image_class_labels.txt   <image_id> <class_id>
    <root>/CUB_200_2011/train_test_split.txt     <image_id> <1 = train, 0 = test>
    <root>/CUB_200_2011/bounding_boxes.txt       <image_id> <x> <y> <width> <height>
    <root>/CUB_200_2011/parts/parts.txt          <part_id> <part name>
    <root>/CUB_200_2011/parts/part_locs.txt      <image_id> <part_id> <x> <y> <visible>
    <root>/CUB_200_2011/images/<class dir>/<file>.jpg

Ids in the files are 1-based; here labels and part indices are 0-based.
"""

from __future__ import annotations

import os
import tarfile
from collections.abc import Callable, Sequence
from pathlib import Path, PureWindowsPath
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from glimpse.data.paths import HOW_TO_GET_DATA, DatasetNotFoundError, resolve_root

CUB_URL = "https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz"
CUB_MD5 = "97eceeb196236b17998738112f37df78"
CUB_ARCHIVE = "CUB_200_2011.tgz"
CUB_FOLDER = "CUB_200_2011"
TARGET_TYPES = ("label", "box", "parts")


class UnsafeArchiveError(ValueError):
    """An archive member would land outside the extraction folder, or is not a plain
    file, folder or in-folder link."""


def _inside(path: str, folder: str) -> bool:
    return os.path.commonpath([path, folder]) == folder


def _check_member(member: tarfile.TarInfo, dest: str) -> None:
    """Raise :class:`UnsafeArchiveError` unless ``member`` stays inside ``dest`` (a real path).

    Resolves through links already on disk, so links extracted earlier cannot be used to
    redirect later members.
    """
    name = member.name
    if os.path.isabs(name) or PureWindowsPath(name).anchor:  # "/x", "\\x", "C:x"
        raise UnsafeArchiveError(f"archive member {name!r} has an absolute path")
    if ".." in PureWindowsPath(name).parts:  # splits on "/" and "\\"
        raise UnsafeArchiveError(f"archive member {name!r} contains '..'")
    target = os.path.realpath(os.path.join(dest, name))
    if not _inside(target, dest):
        raise UnsafeArchiveError(f"archive member {name!r} resolves outside {dest}")
    if member.issym() or member.islnk():
        link = member.linkname
        if os.path.isabs(link) or PureWindowsPath(link).anchor:
            raise UnsafeArchiveError(f"link {name!r} points to the absolute path {link!r}")
        base = os.path.dirname(target) if member.issym() else dest  # hard links: from the top
        if not _inside(os.path.realpath(os.path.join(base, link)), dest):
            raise UnsafeArchiveError(f"link {name!r} -> {link!r} points outside {dest}")
    elif not (member.isfile() or member.isdir()):
        raise UnsafeArchiveError(f"archive member {name!r} is not a file, folder or link")


def safe_extract_tar(archive: str | os.PathLike[str], dest: str | os.PathLike[str]) -> None:
    """Extract a (compressed) tar archive into ``dest``, refusing anything that escapes it.

    Every member is checked before anything is written: absolute paths, ``..`` components,
    links pointing outside ``dest``, devices and FIFOs raise :class:`UnsafeArchiveError` and
    nothing is extracted. While extracting, each member is checked again against what is
    already on disk, and Python's ``"data"`` extraction filter is applied where available.
    """
    os.makedirs(dest, exist_ok=True)
    real_dest = os.path.realpath(dest)
    extra = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
        for member in members:
            _check_member(member, real_dest)
        for member in members:
            _check_member(member, real_dest)
            try:
                tar.extract(member, real_dest, **extra)
            except tarfile.TarError as err:  # the data filter refused it
                raise UnsafeArchiveError(f"archive member {member.name!r}: {err}") from err


def _numbered_lines(path: Path) -> list[tuple[int, str]]:
    """The non-blank lines of ``path`` with their 1-based line numbers."""
    if not path.is_file():
        raise DatasetNotFoundError(
            f"CUB-200-2011 file not found: {path}. The folder {path.parent} should hold the "
            f"official CUB_200_2011 layout; {HOW_TO_GET_DATA}."
        )
    lines = enumerate(path.read_text().splitlines(), start=1)
    return [(number, line) for number, line in lines if line.strip()]


def _read_lines(path: Path) -> list[str]:
    return [line for _, line in _numbered_lines(path)]


def _corrupt(path: Path, why: str) -> DatasetNotFoundError:
    return DatasetNotFoundError(
        f"CUB-200-2011 file {path} is corrupt ({why}). Replace it with the official file; "
        f"{HOW_TO_GET_DATA}."
    )


def _read_names(path: Path) -> tuple[np.ndarray, list[str]]:
    """``<id> <text>`` lines as (int64 ids, texts); the text may contain spaces. Every id
    must be unique."""
    ids, names = [], []
    first_line: dict[int, int] = {}
    for number, line in _numbered_lines(path):
        fields = line.split(maxsplit=1)
        if len(fields) != 2 or not fields[0].isdigit():
            raise _corrupt(path, f"expected '<id> <name>', got {line!r} on line {number}")
        key = int(fields[0])
        if key in first_line:
            raise _corrupt(
                path, f"id {key} on line {number} is already listed on line {first_line[key]}"
            )
        first_line[key] = number
        ids.append(key)
        names.append(fields[1].strip())
    return np.asarray(ids, dtype=np.int64), names


def _read_numbers(path: Path, columns: int) -> np.ndarray:
    """A whitespace-separated numeric table ``(rows, columns)`` as float64."""
    text = " ".join(_read_lines(path))
    try:
        table = np.asarray(text.split(), dtype=np.float64)
    except ValueError as err:
        raise _corrupt(path, str(err)) from err
    if table.size % columns:
        raise _corrupt(path, f"expected {columns} numbers per line")
    return table.reshape(-1, columns)


def _rows_for(path: Path, ids: np.ndarray, all_ids: np.ndarray) -> np.ndarray:
    """Positions of ``ids`` in the ascending ``all_ids``; every id must exist."""
    if len(all_ids) == 0:
        raise _corrupt(path, "images.txt lists no images")
    pos = np.clip(np.searchsorted(all_ids, ids), 0, len(all_ids) - 1)
    if not np.array_equal(all_ids[pos], ids):
        raise _corrupt(path, "it names image ids that images.txt lacks")
    return pos


class CUB200(Dataset):
    """CUB-200-2011 (Wah et al. 2011): 200 bird species with boxes and 15 parts.

    Args:
        root: folder holding ``CUB_200_2011/``; ``None`` means
            :func:`~glimpse.data.default_root`.
        train: the official training split (5 994 images) or test split (5 794).
        target_type: one of, or a sequence of, ``"label"`` (0-based int class),
            ``"box"`` (float32 ``(4,)``: ``x0, y0, x1, y1`` pixels; the file stores
            ``x, y, width, height``), ``"parts"`` (float32 ``(15, 3)``: ``x, y, visible``;
            invisible parts read ``0, 0, 0``). Annotation files are read only for the types
            requested.
        transform: a *joint* transform ``transform(image, box, parts) -> (image, box,
            parts)`` (see :mod:`glimpse.data.transforms`); ``box``/``parts`` are ``None``
            when not requested.
        download: fetch the official archive (md5-checked) into ``root`` and extract it
            safely if the dataset is missing.

    ``__getitem__`` returns ``(image, target)``: an RGB PIL image (or the transform's
    output) and the single target, or a tuple of targets in the order requested.

    Attributes:
        classes: the 200 species names (``"Black_footed_Albatross"``, …), index = label.
        image_ids: int64 ``(N,)`` official 1-based image ids of this split.
        image_paths: paths relative to ``CUB_200_2011/images``.
        targets: int64 ``(N,)`` labels.
        boxes: float32 ``(N, 4)``, or ``None`` if ``"box"`` was not requested.
        parts: float32 ``(N, P, 3)``, or ``None`` if ``"parts"`` was not requested.
        part_names: names from ``parts/parts.txt`` (``None`` if not requested).

    Raises:
        ValueError: unknown ``target_type``.
        DatasetNotFoundError: a missing or corrupt file, naming its path.
    """

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        train: bool = True,
        target_type: str | Sequence[str] = ("label",),
        transform: Callable[..., Any] | None = None,
        download: bool = False,
    ) -> None:
        types = (target_type,) if isinstance(target_type, str) else tuple(target_type)
        bad = [t for t in types if t not in TARGET_TYPES]
        if bad or not types:
            raise ValueError(
                f"target_type={target_type!r} is not valid; expected one or more of {TARGET_TYPES}"
            )
        self.root = resolve_root(root)
        self.train = bool(train)
        self.target_type = types
        self.transform = transform
        self.folder = self.root / CUB_FOLDER
        if download:
            self.download()
        self._load()

    def download(self) -> None:
        """Fetch and extract the official archive unless ``images.txt`` is already there."""
        if (self.folder / "images.txt").is_file():
            return
        from torchvision.datasets.utils import download_url

        try:
            download_url(CUB_URL, os.fspath(self.root), filename=CUB_ARCHIVE, md5=CUB_MD5)
        except (OSError, RuntimeError) as err:  # network failure or checksum mismatch
            raise DatasetNotFoundError(
                f"could not download CUB-200-2011 from {CUB_URL} into {self.root}: {err}. "
                f"Download it by hand and extract it there, or pass --data-root / set "
                "GLIMPSE_DATA to a folder that holds CUB_200_2011."
            ) from err
        safe_extract_tar(self.root / CUB_ARCHIVE, self.root)

    def _load(self) -> None:
        folder = self.folder
        if not (folder / "images").is_dir():
            raise DatasetNotFoundError(
                f"CUB-200-2011 not found: {folder / 'images'} is not a folder. {HOW_TO_GET_DATA}."
            )
        ids, paths = _read_names(folder / "images.txt")
        order = np.argsort(ids, kind="stable")
        ids, paths = ids[order], [paths[i] for i in order]
        class_ids, class_dirs = _read_names(folder / "classes.txt")
        class_dirs = [class_dirs[i] for i in np.argsort(class_ids, kind="stable")]
        self.classes = [d.split(".", 1)[-1] for d in class_dirs]

        path = folder / "image_class_labels.txt"
        table = _read_numbers(path, 2)
        labels = np.full(len(ids), -1, dtype=np.int64)
        labels[_rows_for(path, table[:, 0].astype(np.int64), ids)] = table[:, 1] - 1
        if (labels < 0).any() or (labels >= len(self.classes)).any():
            raise _corrupt(path, f"labels must cover every image and lie in 1..{len(class_ids)}")

        path = folder / "train_test_split.txt"
        table = _read_numbers(path, 2)
        is_train = np.full(len(ids), -1, dtype=np.int64)
        is_train[_rows_for(path, table[:, 0].astype(np.int64), ids)] = table[:, 1]
        if not np.isin(is_train, (0, 1)).all():
            raise _corrupt(path, "every image needs a 0/1 flag")
        keep = np.flatnonzero(is_train == int(self.train))

        self.image_ids = torch.from_numpy(ids[keep])
        self.image_paths = [paths[i] for i in keep]
        self.targets = torch.from_numpy(labels[keep])
        self.boxes: torch.Tensor | None = None
        self.parts: torch.Tensor | None = None
        self.part_names: list[str] | None = None

        if "box" in self.target_type:
            path = folder / "bounding_boxes.txt"
            table = _read_numbers(path, 5)
            boxes = np.full((len(ids), 4), np.nan)
            rows = _rows_for(path, table[:, 0].astype(np.int64), ids)
            boxes[rows] = table[:, 1:]
            if np.isnan(boxes).any():
                raise _corrupt(path, "some images have no box")
            boxes[:, 2:] += boxes[:, :2]  # (x, y, w, h) -> (x0, y0, x1, y1)
            self.boxes = torch.from_numpy(boxes[keep].astype(np.float32))

        if "parts" in self.target_type:
            part_ids, names = _read_names(folder / "parts" / "parts.txt")
            self.part_names = [names[i] for i in np.argsort(part_ids, kind="stable")]
            path = folder / "parts" / "part_locs.txt"
            table = _read_numbers(path, 5)
            parts = np.zeros((len(ids), len(names), 3))
            rows = _rows_for(path, table[:, 0].astype(np.int64), ids)
            cols = table[:, 1].astype(np.int64) - 1
            if (cols < 0).any() or (cols >= len(names)).any():
                raise _corrupt(path, f"part ids must lie in 1..{len(names)}")
            visible = table[:, 4] > 0
            parts[rows, cols] = np.stack([table[:, 2], table[:, 3], visible], 1) * visible[:, None]
            self.parts = torch.from_numpy(parts[keep].astype(np.float32))

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        path = self.folder / "images" / self.image_paths[index]
        try:
            with Image.open(path) as im:
                image = im.convert("RGB")
        except FileNotFoundError as err:
            raise DatasetNotFoundError(
                f"CUB-200-2011 image not found: {path}. {HOW_TO_GET_DATA}."
            ) from err
        except UnidentifiedImageError as err:
            raise _corrupt(path, "not an image") from err
        except (OSError, SyntaxError, ValueError) as err:  # truncated or damaged image data
            raise _corrupt(path, f"unreadable image: {err}") from err
        box = None if self.boxes is None else self.boxes[index].clone()
        parts = None if self.parts is None else self.parts[index].clone()
        if self.transform is not None:
            image, box, parts = self.transform(image, box, parts)
        chosen = {"label": int(self.targets[index]), "box": box, "parts": parts}
        targets = tuple(chosen[t] for t in self.target_type)
        return image, targets[0] if len(targets) == 1 else targets

    def __repr__(self) -> str:
        split = "train" if self.train else "test"
        return (
            f"CUB200(n={len(self)}, split={split!r}, target_type={self.target_type}, "
            f"root={os.fspath(self.root)!r})"
        )
