"""The named datasets of the benchmark, built by :func:`get_dataset`.

Each name fixes the parameters that define the task (canvas size, clutter), so a result
reported for ``"cluttered60"`` always means the same data; use the classes directly for
other settings.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from torch.utils.data import Dataset

from glimpse.data.mnist import load_mnist
from glimpse.data.pairs import DigitPairsMNIST
from glimpse.data.synthetic import ClutteredMNIST, MultiMNIST, TranslatedMNIST
from glimpse.data.twodigit import TwoDigitMNIST

_PRESETS: dict[str, tuple[Callable[..., Dataset], dict[str, Any]]] = {
    "mnist": (load_mnist, {}),
    "translated60": (TranslatedMNIST, {"canvas": 60}),
    "cluttered60": (ClutteredMNIST, {"canvas": 60, "num_clutter": 4, "clutter_size": 8}),
    "cluttered100": (ClutteredMNIST, {"canvas": 100, "num_clutter": 8, "clutter_size": 8}),
    "multimnist": (MultiMNIST, {"canvas": 100, "num_digits": 2}),
    "twodigit100": (TwoDigitMNIST, {"canvas": 100, "num_clutter": 8, "clutter_size": 8}),
    "dram-pairs": (
        DigitPairsMNIST,
        {"canvas": 100, "label": "pair", "num_clutter": 8, "clutter_size": 8},
    ),
    "dram-addition": (
        DigitPairsMNIST,
        {"canvas": 100, "label": "sum", "num_clutter": 8, "clutter_size": 8},
    ),
    "stn-cluttered60": (ClutteredMNIST, {"canvas": 60, "num_clutter": 8, "clutter_size": 6}),
}

DATASETS: tuple[str, ...] = tuple(_PRESETS)
"""Names accepted by :func:`get_dataset`."""


def get_dataset(
    name: str, split: str = "train", root: str | os.PathLike[str] | None = None, **kwargs: Any
) -> Dataset:
    """The dataset called ``name`` (one of :data:`DATASETS`), split ``split``.

    - ``"mnist"``: :func:`~glimpse.data.load_mnist`.
    - ``"translated60"``: :class:`~glimpse.data.TranslatedMNIST` on 60×60 (RAM).
    - ``"cluttered60"``: :class:`~glimpse.data.ClutteredMNIST`, 4 patches of 8×8 on 60×60.
    - ``"cluttered100"``: :class:`~glimpse.data.ClutteredMNIST`, 8 patches of 8×8 on 100×100.
    - ``"multimnist"``: :class:`~glimpse.data.MultiMNIST`, 2 digits on 100×100 (DRAM).
    - ``"twodigit100"``: :class:`~glimpse.data.TwoDigitMNIST`, 2 digits and 8 clutter
      patches of 8×8 on 100×100, one of 100 classes ``10 * left + right`` (the FCAN proxy).
    - ``"dram-pairs"``: :class:`~glimpse.data.DigitPairsMNIST`, the MNIST pairs task of Ba
      et al. 2015 (DRAM) as far as we know it: 2 disjoint digits and 8 distractor patches
      of 8×8 on 100×100, one of 55 classes (the unordered pair). Unverified recipe: see
      :mod:`glimpse.data.pairs`.
    - ``"dram-addition"``: the same images, one of 19 classes (the sum of the two digits;
      the paper's MNIST addition task as far as we know it, unverified).
    - ``"stn-cluttered60"``: :class:`~glimpse.data.ClutteredMNIST`, 8 patches of 6×6 on
      60×60: our reading of the cluttered MNIST of Jaderberg et al. 2015 (STN, arXiv:
      1506.02025, appendix); **unverified** (its appendix was not read): the canvas,
      patch count and patch size are a choice until checked against the paper.

    ``kwargs`` go to the constructor (``seed``, ``val_size``, ``transform``, ``limit``, …);
    a parameter the name fixes (e.g. ``canvas``) may not be overridden.

    Raises:
        ValueError: unknown ``name``, or an override of a fixed parameter.
    """
    if name not in _PRESETS:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}")
    factory, fixed = _PRESETS[name]
    clash = sorted(set(fixed) & set(kwargs))
    if clash:
        raise ValueError(
            f"dataset {name!r} fixes {', '.join(f'{k}={fixed[k]!r}' for k in clash)}; "
            f"got {', '.join(f'{k}={kwargs[k]!r}' for k in clash)}. Build "
            f"{getattr(factory, '__name__', factory)} directly for other settings."
        )
    return factory(root=root, split=split, **fixed, **kwargs)
