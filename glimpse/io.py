"""Atomic file writes: a file is either absent, its old version, or complete.

Every writer of the project goes through :func:`atomic_write`: dataset caches,
checkpoints, configs, metrics and GIFs.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

__all__ = ["atomic_write", "read_json", "write_json"]


def atomic_write(path: str | os.PathLike[str], write: Callable[[BinaryIO], object]) -> Path:
    """Call ``write(f)`` on a temporary binary file beside ``path``, then move it into place.

    The temporary file is flushed and fsynced before ``os.replace`` (atomic on one file
    system), and the folder is fsynced after it (best effort). On any error the temporary
    file is removed and the old ``path``, if any, is left untouched. Unlike ``mkstemp``'s
    0600, the file mode honours the umask, so shared caches stay readable.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(8)}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    fd = os.open(tmp, flags, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if os.name == "posix":
        with contextlib.suppress(OSError):
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
    return path


def read_json(path: str | os.PathLike[str]) -> Any:
    """The JSON document in ``path``.

    Raises ``FileNotFoundError`` naming the file when it is missing, and ``ValueError``
    naming it when it is not valid JSON (truncated, hand-edited), instead of a bare
    ``JSONDecodeError`` without the file name.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err}); delete or repair it") from None


def write_json(path: str | os.PathLike[str], data: Any) -> Path:
    """Write ``data`` as indented JSON with sorted keys and a final newline, atomically
    (:func:`atomic_write`): the one JSON writer of the project's files."""
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    return atomic_write(path, lambda f: f.write(text.encode()))
