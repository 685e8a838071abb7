"""Where datasets live and where generated datasets are cached, plus the shared error type.

The data root holds the raw datasets in torchvision's layout (``<root>/MNIST/raw/...``,
``<root>/CUB_200_2011/...``); the cache holds what this package generates from them
(translated / cluttered / multi-digit MNIST), written atomically.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import Any

import torch

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
    """The data root: ``$GLIMPSE_DATA`` if set, else ``./data``."""
    env = os.environ.get(DATA_ENV)
    return Path(env).expanduser() if env else Path("data")


def cache_dir() -> Path:
    """Cache of generated datasets: ``$GLIMPSE_CACHE`` if set, else ``~/.cache/glimpse``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "glimpse"


def resolve_root(root: str | os.PathLike[str] | None) -> Path:
    """``root`` as a :class:`~pathlib.Path`, or :func:`default_root` when ``None``."""
    return default_root() if root is None else Path(root).expanduser()


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save(obj, path)`` so that ``path`` is either absent or complete.

    Writes to a temporary file in the same folder, flushes and fsyncs it, then
    ``os.replace``-s it onto ``path``. If anything fails midway the temporary file is
    removed and the error propagates; ``path`` is never left half written.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(8)}.tmp"
    # Unlike mkstemp's 0600, os.open honours the umask, so a shared cache stays readable.
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    fd = os.open(tmp, flags, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if os.name == "posix":  # make the rename durable too; best effort (some filesystems refuse)
        with contextlib.suppress(OSError):
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
