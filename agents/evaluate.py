"""Re-evaluate a finished hard-attention run with other evaluation settings: the library
side of ``scripts/evaluate_hard.py``.

Monte-Carlo evaluation (M sampled episodes per image, class probabilities averaged; Mnih
et al. 2014) and the first fixation (image centre or random) change a trained agent's test
error without retraining; model selection stays what the run did (its ``best.pt`` was
chosen on the validation split), so evaluating the test split here is honest.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, ClassVar, Literal

import torch

from glimpse.io import atomic_write

__all__ = ["EvalConfig", "evaluate_run"]

try:
    import tyro

    _RunDir = Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="RUN_DIR")]
except ImportError:  # pragma: no cover - tyro is a dependency
    _RunDir = str  # type: ignore[misc]


@dataclass
class EvalConfig:
    """Evaluate a RAM/DRAM run folder's checkpoint on one split."""

    run_dir: _RunDir  # type: ignore[valid-type]
    """The run folder written by ``train_ram.py`` / ``train_dram.py`` (``runs/<name>``)."""
    split: Literal["val", "test"] = "test"
    """Split of the run's dataset."""
    checkpoint: Literal["best", "last"] = "best"
    """Checkpoint of the run folder."""
    mc_samples: int | None = None
    """Monte-Carlo samples per image (1: one episode with the mean locations); default:
    the run's."""
    init_location: Literal["center", "random"] | None = None
    """First fixation: image centre or uniformly random; default: the run's."""
    eval_batch_size: int | None = None
    """Images per evaluation batch; default: the run's."""
    device: str = "cpu"
    """'cpu', 'cuda[:N]' or 'auto'."""
    threads: int = 1
    """PyTorch CPU threads (0: PyTorch's default)."""

    RULES: ClassVar[dict[str, tuple]] = {
        "mc_samples": (">=", 1),
        "eval_batch_size": (">=", 1),
        "threads": (">=", 0),
    }
    """Bounds of the numeric fields (:func:`glimpse.training.check_config`)."""


def evaluate_run(cfg: EvalConfig) -> dict[str, float]:
    """Metrics of the run's agent on ``cfg.split`` with the overridden settings; also
    written (atomically) to ``<run_dir>/evaluations/<split>-<checkpoint>-mc<M>-<init>.json``."""
    from agents.train import POLICIES, evaluate_policy
    from glimpse.playback import eval_env, load_hard_config
    from glimpse.training import load_checkpoint, resolve_device

    run_cfg = load_hard_config(cfg.run_dir)
    over = {
        k: v
        for k, v in {
            "mc_samples": cfg.mc_samples,
            "init_location": cfg.init_location,
            "eval_batch_size": cfg.eval_batch_size,
        }.items()
        if v is not None
    }
    for name in ("mc_samples", "eval_batch_size"):
        if name in over and over[name] < 1:
            raise ValueError(f"{name} must be >= 1, got {over[name]}")
    run_cfg = replace(run_cfg, **over, resume=False)
    ckpt = Path(cfg.run_dir) / f"{cfg.checkpoint}.pt"
    if not ckpt.is_file():
        raise ValueError(f"no checkpoint {ckpt} (expected best.pt or last.pt in the run folder)")
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    venv = eval_env(run_cfg, cfg.split, run_cfg.eval_batch_size * run_cfg.mc_samples, device)
    glimpse_shape = venv.single_observation_space["glimpse"].shape
    policy = POLICIES[run_cfg.agent](run_cfg, glimpse_shape, venv.config.num_targets).to(device)
    policy.load_state_dict(load_checkpoint(ckpt, device)["model"])
    policy.eval()
    metrics = evaluate_policy(policy, venv, run_cfg, desc=cfg.split)
    result = {
        **metrics,
        "split": cfg.split,
        "checkpoint": cfg.checkpoint,
        "mc_samples": run_cfg.mc_samples,
        "init_location": run_cfg.init_location,
    }
    name = f"{cfg.split}-{cfg.checkpoint}-mc{run_cfg.mc_samples}-{run_cfg.init_location}.json"
    out = Path(cfg.run_dir) / "evaluations" / name
    atomic_write(out, lambda f: f.write(json.dumps(result, indent=2).encode()))
    return result
