"""Where datasets live and where generated datasets are cached, plus the shared error type.

The data root holds the raw datasets in torchvision's layout (``<root>/MNIST/raw/...``,
``<root>/CUB_200_2011/...``); the cache holds what this package generates from them
(translated / cluttered / multi-digit MNIST), written atomically.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from glimpse.io import atomic_write

DATA_ENV = "GLIMPSE_DATA"
CACHE_ENV = "GLIMPSE_CACHE"

HOW_TO_GET_DATA = (
    f"pass --data-root or set {DATA_ENV} to the folder that holds it; "
    "with internet access use download=True"
)


class DatasetNotFoundError(FileNotFoundError):
    """A dataset root is missing, incomplete, or holds a corrupt file.

    The message names the path and says how to get the data.
    """


def default_root() -> Path:
    """The data root: ``$GLIMPSE_DATA`` if set, else ``./data``; absolute (a relative one
    is taken from the current working directory)."""
    env = os.environ.get(DATA_ENV)
    return (Path(env).expanduser() if env else Path("data")).absolute()


def cache_dir() -> Path:
    """Cache of generated datasets: ``$GLIMPSE_CACHE`` if set, else ``~/.cache/glimpse``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "glimpse"


def resolve_root(root: str | os.PathLike[str] | None) -> Path:
    """``root`` as an absolute :class:`~pathlib.Path`, or :func:`default_root` when ``None``."""
    return default_root() if root is None else Path(root).expanduser().absolute()


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save(obj, path)`` so that ``path`` is either absent or complete
    (:func:`glimpse.io.atomic_write`)."""
    atomic_write(path, lambda f: torch.save(obj, f))
