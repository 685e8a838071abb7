"""Argument and input checks shared by every attention family (one place, one wording)."""

from __future__ import annotations

from torch import Tensor

from glimpse.checks import check_positive_int

__all__ = [
    "bottleneck_width",
    "channel_groups",
    "check_feature_map",
    "check_odd_kernel",
    "check_positive_int",
    "check_positive_number",
]


def check_positive_number(name: str, value: object) -> float:
    """Return ``value`` if it is a positive real ``int``/``float`` (not a ``bool``); else
    ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return value


def check_odd_kernel(name: str, value: object) -> int:
    """Return ``value`` if it is a positive odd ``int`` (keeps ``H, W`` with ``k // 2``
    padding); else ``ValueError``."""
    check_positive_int(name, value)
    if value % 2 == 0:
        raise ValueError(f"{name} must be odd, got {value}")
    return value


def channel_groups(name: str, channels: int, groups: int | None, limit: int = 8) -> int:
    """``groups`` checked to divide ``channels``; ``None``: the largest divisor of
    ``channels`` not above ``limit`` (``ValueError`` otherwise)."""
    if groups is None:
        return max(d for d in range(1, limit + 1) if channels % d == 0)
    check_positive_int(name, groups)
    if channels % groups:
        raise ValueError(f"{name} ({groups}) must divide channels ({channels})")
    return groups


def check_feature_map(x: Tensor, channels: int, name: str) -> None:
    """Raise ``ValueError`` unless ``x`` is a ``(B, channels, H, W)`` tensor with ``H, W >= 1``
    (``name``, the module's name, goes in the message)."""
    if not isinstance(x, Tensor) or x.ndim != 4 or x.shape[1] != channels or 0 in x.shape[2:]:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{name} expects input of shape (B, {channels}, H, W), got {shape}")


def bottleneck_width(channels: int, reduction: int, min_hidden: int) -> int:
    """Hidden width of a channel MLP: ``max(channels // reduction, min(min_hidden, channels))``.

    The floor keeps narrow layers from collapsing to one or two hidden units (``64 // 16 = 4``
    becomes 8 with the default floor of 8) without ever widening past ``channels``.
    """
    check_positive_int("channels", channels)
    check_positive_int("reduction", reduction)
    check_positive_int("min_hidden", min_hidden)
    return max(channels // reduction, min(min_hidden, channels))
