"""The hard-attention policy registry: agent name -> builder from a run's config."""

from __future__ import annotations

from collections.abc import Callable

from agents.config import HardTrainConfig
from agents.dram import DRAM
from agents.policy import GlimpsePolicy
from agents.ram import RAM

__all__ = ["POLICIES", "build_dram", "build_ram"]


def build_ram(
    cfg: HardTrainConfig,
    glimpse_shape: tuple[int, int, int, int],
    num_targets: int,
    num_classes: int | None = None,
) -> GlimpsePolicy:
    """RAM sized from the config, the env's glimpse shape and its number of classes
    (default: the task's, :meth:`HardTrainConfig.task_num_classes`)."""
    return RAM(
        glimpse_shape,
        num_classes=num_classes or cfg.task_num_classes(),
        hidden=cfg.hidden,
        core=cfg.core,
        std=cfg.std,
        learn_std=cfg.learn_std,
        detach_location=cfg.detach_location,
    )


def build_dram(
    cfg: HardTrainConfig,
    glimpse_shape: tuple[int, int, int, int],
    num_targets: int,
    num_classes: int | None = None,
) -> GlimpsePolicy:
    """DRAM sized from the config, the env's glimpse shape, its context view and number of
    classes (default: the task's)."""
    context_shape = (glimpse_shape[1], cfg.context_size, cfg.context_size)
    return DRAM(
        glimpse_shape,
        context_shape,
        num_classes=num_classes or cfg.task_num_classes(),
        hidden=cfg.hidden,
        std=cfg.std,
        learn_std=cfg.learn_std,
        detach_location=cfg.detach_location,
    )


POLICIES: dict[str, Callable[..., GlimpsePolicy]] = {
    "ram": build_ram,
    "dram": build_dram,
}
"""Agent name -> ``build(cfg, glimpse_shape, num_targets, num_classes=None)``."""
