"""Soft (differentiable) attention baselines: one registry, one file per family.

``create(name, channels, **kw)`` builds any registered module; ``list_modules()`` lists them;
``timm_attn_layer(name)`` makes one usable as a timm ``attn_layer``.
Importing this package imports every family module in it, which registers them.
"""

import importlib
import pkgutil

from soft_baselines.registry import (
    create,
    get_entry,
    list_aliases,
    list_modules,
    register,
    timm_attn_layer,
)

_NOT_FAMILIES = {"registry", "backbones", "train", "attention_maps"}
for _info in pkgutil.iter_modules(__path__):
    if _info.name not in _NOT_FAMILIES and not _info.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_info.name}")

__all__ = [
    "create",
    "get_entry",
    "list_aliases",
    "list_modules",
    "register",
    "timm_attn_layer",
]
