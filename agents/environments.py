"""The vector envs of a hard-attention run: training (shuffled) and evaluation (ordered)
splits of the run's task, built from its config."""

from __future__ import annotations

from typing import Any

import torch

from agents.config import HardTrainConfig
from envs import GlimpseVectorEnv, ImageSource
from glimpse.tasks import get_task

__all__ = ["build_envs"]


def build_envs(
    cfg: HardTrainConfig, device: torch.device
) -> tuple[GlimpseVectorEnv, dict[str, GlimpseVectorEnv]]:
    """The training env (shuffled train split, its first ``cfg.train_limit`` images if
    set) and ordered evaluation envs (val, test; their first ``cfg.eval_limit`` images if
    set). The number of classes is the dataset's (``len(dataset.classes)``)."""
    kw: dict[str, Any] = {"val_size": cfg.val_size}
    if cfg.download:
        kw["download"] = True
    limits = {"train": cfg.train_limit, "val": cfg.eval_limit, "test": cfg.eval_limit}
    sources: dict[str, ImageSource] = {}
    num_classes = 0
    for split, n in limits.items():
        task = get_task(cfg.task)
        lim = {"limit": n} if n and task.generated else {}
        ds = task.load(split, cfg.data_root, **kw, **lim)
        num_classes = max(num_classes, len(ds.classes))
        src = ImageSource.from_any(ds, device=device)
        if n and n < len(src):  # MNIST takes no limit: the first n of the split
            boxes = None if src.boxes is None else src.boxes[:n]
            src = ImageSource(src.images[:n], src.labels[:n], boxes)
        sources[split] = src
    mdp = cfg.mdp(sources["train"].num_targets, num_classes)
    train_env = GlimpseVectorEnv(sources["train"], cfg.batch_size, mdp, device=device)
    n_eval = cfg.eval_batch_size * cfg.mc_samples
    evals = {
        split: GlimpseVectorEnv(sources[split], n_eval, mdp, device=device, shuffle=False)
        for split in ("val", "test")
    }
    return train_env, evals
