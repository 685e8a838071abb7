"""Registry of soft-attention modules: ``register``, ``list_modules``, ``create``.

Two kinds of module are registered:

- ``"block"``: drop-in attention blocks. Contract: the first constructor argument is
  ``channels``; ``forward`` maps ``(B, C, H, W)`` to the same shape; residual branches are
  initialised so that the block starts as (close to) the identity.
- ``"transform"``: spatial transformers that warp the input image (STN). Contract: first
  argument ``in_channels``; ``forward`` maps ``(B, C, H, W)`` to ``(B, C, H', W')``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from torch import nn

Kind = Literal["block", "transform"]


@dataclass(frozen=True)
class Entry:
    """One registered module: its constructor, kind and one-line description."""

    name: str
    factory: Callable[..., nn.Module]
    kind: Kind
    doc: str


_REGISTRY: dict[str, Entry] = {}


def register(name: str, kind: Kind = "block") -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator registering an attention module under ``name``.

    Raises ``ValueError`` if ``name`` is already taken or ``kind`` is unknown.
    """
    if kind not in ("block", "transform"):
        raise ValueError(f"kind must be 'block' or 'transform', got {kind!r}")

    def deco(cls: type[nn.Module]) -> type[nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"attention module {name!r} is already registered")
        doc = (cls.__doc__ or "").strip().splitlines()
        _REGISTRY[name] = Entry(name, cls, kind, doc[0] if doc else "")
        return cls

    return deco


def _ensure_loaded() -> None:
    # Importing the package registers every family (one file per family).
    import soft_baselines  # noqa: F401


def list_modules(kind: Kind | None = None) -> list[str]:
    """Sorted names of registered modules, optionally only those of one ``kind``."""
    _ensure_loaded()
    return sorted(n for n, e in _REGISTRY.items() if kind is None or e.kind == kind)


def get_entry(name: str) -> Entry:
    """The registry entry for ``name``; ``ValueError`` listing valid names if unknown."""
    _ensure_loaded()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown attention module {name!r}; valid names: {', '.join(list_modules())}"
        ) from None


def create(name: str, channels: int, **kwargs) -> nn.Module:
    """Build the registered module ``name`` for ``channels`` input channels.

    Unknown keyword arguments are not swallowed: they raise ``TypeError`` from the
    module's constructor.
    """
    entry = get_entry(name)
    if not isinstance(channels, int) or isinstance(channels, bool) or channels < 1:
        raise ValueError(f"channels must be a positive int, got {channels!r}")
    return entry.factory(channels, **kwargs)
