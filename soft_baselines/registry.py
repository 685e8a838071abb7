"""Registry of soft-attention modules: ``register``, ``list_modules``, ``create``.

Two kinds of module are registered:

- ``"block"``: drop-in attention blocks. Contract: the first constructor argument is
  ``channels``; ``forward`` maps ``(B, C, H, W)`` to the same shape; residual branches are
  initialised so that the block starts as (close to) the identity.
- ``"transform"``: spatial transformers that warp the input image (STN). Contract: first
  argument ``in_channels``; ``forward`` maps ``(B, C, H, W)`` to ``(B, C, H', W')``.

timm compatibility (``create`` and :func:`timm_attn_layer`):

- **Aliases**: timm's attention-type names resolve to the Glimpse block that implements
  the same paper (``"nl"`` -> ``"nonlocal"``; ``"se"``, ``"eca"``, ``"cbam"``, ``"gc"``,
  ``"sk"`` are the same names in both). An alias picks the block, not timm's defaults:
  e.g. timm's ``"gc"`` fuses by scaling, Glimpse's ``"gc"`` by addition (the paper's
  default); pass ``fusion="mul"`` for timm's form.
- **Keywords** that mean the same thing in timm: ``device`` and ``dtype`` (every block:
  the module is built, then moved), and ``rd_ratio`` (the bottleneck ratio, ``hidden /
  channels``) for blocks that register a translation of it into their own keyword
  (``reduction = 1 / rd_ratio``, ``ratio = rd_ratio``, ...). Only the ratio carries over:
  each block keeps its own rounding and floor of the hidden width (timm rounds with
  ``make_divisible``). Any other keyword, including ``rd_ratio`` for a block without a
  translation, raises ``TypeError``.

The registry is full whenever it is queried: importing this module imports the package
``soft_baselines`` first, whose ``__init__`` imports every family module (one file per
family), and each registers itself.

Spatial attention maps (``register(..., spatial_map=...)``): every family declares whether
its module has a map of *where* it attends, for
:mod:`soft_baselines.attention_maps`. ``spatial_map=True``: the class defines
``spatial_map(x, ...) -> (B, h, w)`` (its docstring says what the map is; ``None`` for an
instance built without a spatial part); ``spatial_map=False``: the module attends over
channels (or branches) only and defines no such method, so no map is ever faked.
Undeclared (``None``) is allowed for modules registered elsewhere; the registry-wide tests
demand a declaration from every module registered here.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from glimpse.checks import check_positive_int
from soft_baselines._checks import check_positive_number

Kind = Literal["block", "transform"]
RdRatio = Callable[[int, float], dict[str, Any]]


@dataclass(frozen=True)
class Entry:
    """One registered module: its constructor, kind and one-line description."""

    name: str
    factory: Callable[..., nn.Module]
    kind: Kind
    doc: str
    rd_ratio: RdRatio | None = None
    spatial_map: bool | None = None


_REGISTRY: dict[str, Entry] = {}
_ALIASES: dict[str, str] = {}


def rd_ratio_as_reduction(channels: int, rd_ratio: float) -> dict[str, Any]:
    """timm's ``rd_ratio`` as an integer ``reduction = 1 / rd_ratio`` (``ValueError`` if it
    is not the reciprocal of a positive integer)."""
    check_positive_number("rd_ratio", rd_ratio)
    reduction = round(1 / rd_ratio)
    if reduction < 1 or not math.isclose(reduction * rd_ratio, 1.0, rel_tol=1e-9):
        raise ValueError(f"rd_ratio must be 1/n for a positive int n here, got {rd_ratio!r}")
    return {"reduction": reduction}


def register(
    name: str,
    kind: Kind = "block",
    *,
    aliases: tuple[str, ...] = (),
    rd_ratio: RdRatio | None = None,
    spatial_map: bool | None = None,
) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator registering an attention module under ``name`` (and ``aliases``).

    ``rd_ratio``, if given, translates timm's ``rd_ratio`` for ``channels`` into this
    module's own keyword arguments (see the module docstring). ``spatial_map`` declares
    whether the module has a spatial attention map (module docstring): ``True`` requires a
    ``spatial_map`` method on the class, ``False`` forbids one. Raises ``ValueError`` if a
    name or alias is already taken, ``kind`` is unknown or the declaration does not match
    the class.
    """
    if kind not in ("block", "transform"):
        raise ValueError(f"kind must be 'block' or 'transform', got {kind!r}")
    if not (spatial_map is None or isinstance(spatial_map, bool)):
        raise ValueError(f"spatial_map must be True, False or None, got {spatial_map!r}")

    def deco(cls: type[nn.Module]) -> type[nn.Module]:
        for n in (name, *aliases):
            if n in _REGISTRY or n in _ALIASES:
                raise ValueError(f"attention module {n!r} is already registered")
        has_method = callable(getattr(cls, "spatial_map", None))
        if spatial_map is True and not has_method:
            raise ValueError(f"{name!r} declares spatial_map=True but defines no spatial_map()")
        if spatial_map is False and has_method:
            raise ValueError(f"{name!r} declares spatial_map=False but defines spatial_map()")
        doc = (cls.__doc__ or "").strip().splitlines()
        _REGISTRY[name] = Entry(name, cls, kind, doc[0] if doc else "", rd_ratio, spatial_map)
        for alias in aliases:
            _ALIASES[alias] = name
        return cls

    return deco


def list_modules(kind: Kind | None = None) -> list[str]:
    """Sorted names of registered modules, optionally only those of one ``kind``."""
    return sorted(n for n, e in _REGISTRY.items() if kind is None or e.kind == kind)


def list_aliases() -> dict[str, str]:
    """Alias -> registered name (timm's attention-type names, e.g. ``"nl"``)."""
    return dict(sorted(_ALIASES.items()))


def get_entry(name: str) -> Entry:
    """The registry entry for ``name`` or an alias of it; ``ValueError`` listing valid
    names if unknown."""
    try:
        return _REGISTRY[_ALIASES.get(name, name)]
    except (KeyError, TypeError):
        aliases = ", ".join(f"{a} ({n})" for a, n in list_aliases().items())
        raise ValueError(
            f"unknown attention module {name!r}; valid names: {', '.join(list_modules())}; "
            f"aliases: {aliases or 'none'}"
        ) from None


def entry_of(module: nn.Module) -> Entry | None:
    """The registry entry whose class is exactly ``type(module)``, or ``None`` (a module
    that is not a registered attention module, e.g. a conv layer or a backbone)."""
    for entry in _REGISTRY.values():
        if type(module) is entry.factory:
            return entry
    return None


def create(
    name: str,
    channels: int,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build the registered module ``name`` (or an alias) for ``channels`` input channels.

    ``device`` and ``dtype`` move the built module (timm's keywords); ``rd_ratio`` is
    translated for the blocks that register a translation (module docstring). Unknown
    keyword arguments are not swallowed: they raise ``TypeError`` (from the module's
    constructor, or here for ``rd_ratio`` on a block without a translation).
    """
    entry = get_entry(name)
    check_positive_int("channels", channels)
    if "rd_ratio" in kwargs:
        if entry.rd_ratio is None:
            raise TypeError(f"{entry.name!r} takes no rd_ratio (it has no bottleneck ratio)")
        translated = entry.rd_ratio(channels, kwargs.pop("rd_ratio"))
        clash = sorted(set(translated) & set(kwargs))
        if clash:
            raise TypeError(f"rd_ratio and {', '.join(clash)} both given for {entry.name!r}")
        kwargs.update(translated)
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ValueError(f"dtype must be a floating-point torch.dtype, got {dtype!r}")
    module = entry.factory(channels, **kwargs)
    if device is not None or dtype is not None:
        module.to(device=device, dtype=dtype)
    return module


def timm_attn_layer(name: str, **kwargs: Any) -> Callable[..., nn.Module]:
    """A constructor usable as timm's ``attn_layer``: ``layer(channels, **more)`` builds
    ``create(name, channels, **kwargs, **more)``.

    timm calls ``attn_layer(channels, device=..., dtype=...)``; e.g.
    ``timm.create_model("resnet18", block_args=dict(attn_layer=timm_attn_layer("cbam")))``.
    The name is checked now (``ValueError`` if unknown or not a ``"block"``).
    """
    entry = get_entry(name)
    if entry.kind != "block":
        raise ValueError(f"{name!r} is a {entry.kind}, not a drop-in block")
    return functools.partial(create, entry.name, **kwargs)
