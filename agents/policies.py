"""The hard-attention policy registry: agent name -> builder from a run's config."""

from __future__ import annotations

from collections.abc import Callable

from agents.config import HardTrainConfig
from agents.dram import DRAM
from agents.fixed import GridScan, RandomLocations
from agents.policy import GlimpsePolicy
from agents.ram import RAM
from agents.soft_locations import SoftLocations

__all__ = [
    "POLICIES",
    "build_dram",
    "build_grid_scan",
    "build_ram",
    "build_random_locations",
    "build_soft_locations",
]


def build_ram(
    cfg: HardTrainConfig,
    glimpse_shape: tuple[int, int, int, int],
    num_targets: int,
    num_classes: int | None = None,
) -> RAM:
    """RAM sized from the config, the env's glimpse shape and its number of classes
    (default: the task's, :meth:`HardTrainConfig.task_num_classes`), with the glimpse
    network :meth:`HardTrainConfig.glimpse_network` (``ram-conv``: the conv one)."""
    return RAM(
        glimpse_shape,
        num_classes=num_classes or cfg.task_num_classes(),
        hidden=cfg.hidden,
        core=cfg.core,
        std=cfg.std,
        learn_std=cfg.learn_std,
        detach_location=cfg.detach_location,
        glimpse_net=cfg.glimpse_network(),  # type: ignore[arg-type]
    )


def build_random_locations(
    cfg: HardTrainConfig,
    glimpse_shape: tuple[int, int, int, int],
    num_targets: int,
    num_classes: int | None = None,
) -> GlimpsePolicy:
    """``glimpse-random``: :func:`build_ram`'s network with uniformly random locations."""
    return RandomLocations(build_ram(cfg, glimpse_shape, num_targets, num_classes))


def build_grid_scan(
    cfg: HardTrainConfig,
    glimpse_shape: tuple[int, int, int, int],
    num_targets: int,
    num_classes: int | None = None,
) -> GlimpsePolicy:
    """``glimpse-grid``: :func:`build_ram`'s network on the fixed scan path of
    :func:`agents.fixed.scan_path` over ``cfg.num_glimpses`` glimpses."""
    body = build_ram(cfg, glimpse_shape, num_targets, num_classes)
    return GridScan(body, cfg.num_glimpses, cfg.num_glimpses * num_targets)


def build_soft_locations(
    cfg: HardTrainConfig,
    glimpse_shape: tuple[int, int, int, int],
    num_targets: int,
    num_classes: int | None = None,
) -> GlimpsePolicy:
    """``glimpse-soft``: :func:`build_ram`'s network with its location head's output as the
    next location, differentiable through the env's retina (the core is never detached from
    the location head: its gradient is the classification loss's)."""
    body = build_ram(cfg, glimpse_shape, num_targets, num_classes)
    body.detach_location = False
    return SoftLocations(body, detach_core=cfg.location_gradient == "head")


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
    "ram-conv": build_ram,
    "glimpse-random": build_random_locations,
    "glimpse-grid": build_grid_scan,
    "glimpse-soft": build_soft_locations,
}
"""Agent name -> ``build(cfg, glimpse_shape, num_targets, num_classes=None)``."""
