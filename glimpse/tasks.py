"""The task table: every task of the benchmark defined once, read by every other place.

A :class:`Task` names its dataset (a name of :func:`glimpse.data.get_dataset`, which fixes
the canvas and clutter), what is predicted (classes, targets per image), the image size,
the paper's glimpse defaults and the Gymnasium id under which :mod:`envs` registers it::

    from glimpse.tasks import get_task

    task = get_task("cluttered60")
    task.env_id                     # "Glimpse/ClutteredMNIST60-v0"
    task.num_glimpses, task.glimpse_size, task.num_scales  # 8, 12, 3 (Mnih et al. 2014)
    train = task.load("train", limit=1000)  # generated tasks take ``limit``

Readers: :mod:`envs` registers one id per task from :meth:`Task.env_kwargs`;
``agents.train`` (RAM, DRAM) fills unset glimpse settings from it and trains on the
``paper`` and ``proxy`` tasks; ``soft_baselines.train`` takes the single-target ones; the
comparison, ``agents.ppo_train`` and ``glimpse.experiments.curves`` read ``num_targets`` from it.

Kinds: ``paper`` (the papers' tasks and settings), ``proxy`` (one-location tasks beyond
the papers': the FCAN proxy for RAM and DRAM) and ``parts`` (part localization, ``K``
locations per step). CUB-200-2011 is not here: it is a dataset the parts trainer builds
itself (:mod:`agents.parts_train`), with no registered env.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal

from torch.utils.data import Dataset

from glimpse.data import get_dataset

__all__ = ["KINDS", "TASKS", "Task", "get_task", "task_for_env_id", "tasks_of"]

Kind = Literal["paper", "proxy", "parts"]
KINDS: tuple[str, ...] = ("paper", "proxy", "parts")
"""The kinds of task, in table order (module docstring)."""

_RAM = "Mnih et al. 2014, Recurrent Models of Visual Attention, arXiv:1406.6247"
_DRAM = "Ba et al. 2015, Multiple Object Recognition with Visual Attention, arXiv:1412.7755"
_FCAN = "Liu et al. 2016, Fully Convolutional Attention Networks (FCAN)"
_STN = "Jaderberg et al. 2015, Spatial Transformer Networks, arXiv:1506.02025"
_DRAM_MNIST = (
    f"{_DRAM}, section 4.1 (unverified: canvas 100x100, 4 glimpses and the distractors as "
    "we recall the paper; its text was not read, see glimpse.data.pairs); 12x12 glimpses at "
    "4 scales and the 25x25 context view are multimnist's, not the paper's"
)


@dataclass(frozen=True)
class Task:
    """One task: its data, what is predicted, and the paper's glimpse settings."""

    name: str
    """The task's name (what ``--task`` / ``--dataset`` take)."""
    dataset: str
    """Its dataset: a name of :func:`glimpse.data.get_dataset` (which fixes its parameters)."""
    env_id: str
    """The Gymnasium id :mod:`envs` registers it under (``Glimpse/...-v0``)."""
    kind: Kind
    """``paper``, ``proxy`` or ``parts`` (module docstring)."""
    image_size: tuple[int, int]
    """``(H, W)`` of its images."""
    num_glimpses: int
    """Glimpses ``T`` per target (parts: steps, the last one classifies)."""
    glimpse_size: int
    """Glimpse side ``g`` in pixels at the finest scale."""
    num_scales: int
    """Scales ``k`` per glimpse (each twice the previous one's side)."""
    reference: str
    """Where the task and its settings come from."""
    description: str
    """One line on the data."""
    num_classes: int = 10
    """Classes per target."""
    num_targets: int = 1
    """Objects classified in turn per image (2 on MultiMNIST: one episode names both)."""
    context_size: int = 0
    """Side of the coarse whole-image view the env offers (0: none)."""
    num_parts: int = 0
    """``K`` locations per step (parts mode); 0 for one location per step."""
    generated: bool = True
    """Generated data: the dataset takes ``limit`` (its first ``n`` images, made alone)."""

    def env_kwargs(self) -> dict[str, Any]:
        """The keyword arguments its Gymnasium id is registered with: ``source`` and the
        env's :class:`envs.MDPConfig` defaults (fields at the env's default are left out)."""
        kwargs: dict[str, Any] = {
            "source": self.dataset,
            "glimpse_size": self.glimpse_size,
            "num_scales": self.num_scales,
            "num_glimpses": self.num_glimpses,
        }
        optional = {
            "num_classes": (self.num_classes, 10),
            "num_targets": (self.num_targets, 1),
            "num_parts": (self.num_parts, 0),
            "context_size": (self.context_size, 0),
        }
        kwargs.update({k: v for k, (v, default) in optional.items() if v != default})
        return kwargs

    def load(
        self, split: str = "train", root: str | os.PathLike[str] | None = None, **kwargs: Any
    ) -> Dataset:
        """Its dataset's ``split`` (:func:`glimpse.data.get_dataset`; ``kwargs`` go there)."""
        return get_dataset(self.dataset, split, root, **kwargs)


_TABLE = (
    Task(
        name="mnist",
        dataset="mnist",
        env_id="Glimpse/MNIST-v0",
        kind="paper",
        image_size=(28, 28),
        num_glimpses=6,
        glimpse_size=8,
        num_scales=1,
        generated=False,
        reference=f"{_RAM}, Table 1a",
        description="28x28 MNIST",
    ),
    Task(
        name="translated60",
        dataset="translated60",
        env_id="Glimpse/TranslatedMNIST60-v0",
        kind="paper",
        image_size=(60, 60),
        num_glimpses=8,
        glimpse_size=12,
        num_scales=3,
        reference=f"{_RAM}, Table 1b",
        description="a digit on a 60x60 canvas",
    ),
    Task(
        name="cluttered60",
        dataset="cluttered60",
        env_id="Glimpse/ClutteredMNIST60-v0",
        kind="paper",
        image_size=(60, 60),
        num_glimpses=8,
        glimpse_size=12,
        num_scales=3,
        reference=f"{_RAM}, Table 2a",
        description="60x60, 4 clutter patches 8x8",
    ),
    Task(
        name="cluttered100",
        dataset="cluttered100",
        env_id="Glimpse/ClutteredMNIST100-v0",
        kind="paper",
        image_size=(100, 100),
        num_glimpses=8,
        glimpse_size=12,
        num_scales=4,
        reference=f"{_RAM}, Table 2b",
        description="100x100, 8 clutter patches 8x8",
    ),
    Task(
        name="multimnist",
        dataset="multimnist",
        env_id="Glimpse/MultiMNIST-v0",
        kind="paper",
        image_size=(100, 100),
        num_glimpses=8,
        glimpse_size=12,
        num_scales=4,
        num_targets=2,
        context_size=25,
        reference=_DRAM,
        description="2 digits on 100x100, read left to right (a reward per correct digit)",
    ),
    Task(
        name="dram-pairs",
        dataset="dram-pairs",
        env_id="Glimpse/DRAMPairsMNIST-v0",
        kind="paper",
        image_size=(100, 100),
        num_glimpses=4,
        glimpse_size=12,
        num_scales=4,
        num_classes=55,
        context_size=25,
        reference=f"{_DRAM_MNIST}; MNIST pairs, Table 1",
        description="2 disjoint digits and 8 distractor patches 8x8 on 100x100, one of 55 "
        "classes (the unordered pair)",
    ),
    Task(
        name="dram-addition",
        dataset="dram-addition",
        env_id="Glimpse/DRAMAdditionMNIST-v0",
        kind="paper",
        image_size=(100, 100),
        num_glimpses=4,
        glimpse_size=12,
        num_scales=4,
        num_classes=19,
        context_size=25,
        reference=f"{_DRAM_MNIST}; MNIST addition, Table 2",
        description="dram-pairs' images, one of 19 classes (the sum of the two digits)",
    ),
    Task(
        name="stn-cluttered60",
        dataset="stn-cluttered60",
        env_id="Glimpse/STNClutteredMNIST60-v0",
        kind="paper",
        image_size=(60, 60),
        num_glimpses=8,
        glimpse_size=12,
        num_scales=3,
        reference=f"{_STN}, appendix (unverified: 8 clutter crops of 6x6 on 60x60 is our "
        "reading, the appendix was not read); glimpse settings are cluttered60's "
        f"({_RAM}, Table 2a): the STN paper has no glimpses",
        description="60x60, 8 clutter patches 6x6 (the STN paper's recipe, unverified)",
    ),
    Task(
        name="twodigit100",
        dataset="twodigit100",
        env_id="Glimpse/TwoDigit100-v0",
        kind="proxy",
        image_size=(100, 100),
        num_glimpses=8,
        glimpse_size=12,
        num_scales=4,
        num_classes=100,
        reference=f"the FCAN proxy ({_FCAN}) with cluttered100's settings ({_RAM})",
        description="2 digits and 8 clutter patches on 100x100, one of 100 classes "
        "10 * left + right",
    ),
    Task(
        name="twodigit100-parts",
        dataset="twodigit100",
        env_id="Glimpse/TwoDigitParts-v0",
        kind="parts",
        image_size=(100, 100),
        num_glimpses=2,
        glimpse_size=28,
        num_scales=2,
        num_classes=100,
        num_parts=2,
        context_size=25,
        reference=_FCAN,
        description="twodigit100 as part localization: one step names K=2 part locations "
        "from the 25x25 whole image, the next classifies from the two part crops",
    ),
)

TASKS: Mapping[str, Task] = MappingProxyType({t.name: t for t in _TABLE})
"""Every task by name, in table order (read-only)."""

_BY_ENV_ID: Mapping[str, Task] = MappingProxyType({t.env_id: t for t in _TABLE})


def get_task(name: str) -> Task:
    """The task called ``name``. Raises ``ValueError`` (listing the valid names) if unknown."""
    try:
        return TASKS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown task {name!r}; valid names: {', '.join(TASKS)}") from None


def task_for_env_id(env_id: str) -> Task:
    """The task registered as ``env_id``. Raises ``ValueError`` (listing the ids) if none."""
    try:
        return _BY_ENV_ID[env_id]
    except (KeyError, TypeError):
        raise ValueError(
            f"no task is registered as {env_id!r}; task ids: {', '.join(_BY_ENV_ID)}"
        ) from None


def tasks_of(*kinds: str) -> tuple[Task, ...]:
    """The tasks of the given kinds (all kinds if none given), in table order."""
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        raise ValueError(f"unknown task kind(s) {bad}; valid: {', '.join(KINDS)}")
    return tuple(t for t in _TABLE if not kinds or t.kind in kinds)
