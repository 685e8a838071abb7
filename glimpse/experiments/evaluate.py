"""Re-evaluate a finished hard-attention run with other evaluation settings: the library
side of ``scripts/evaluate_hard.py``.

The protocol (:data:`agents.reinforce.PROTOCOLS`: one episode per image with the mean or
with sampled locations, or Monte-Carlo averaging of M sampled episodes, Mnih et al. 2014)
and the first fixation (image centre or random) change a trained agent's test error
without retraining; model selection stays what the run did (its ``best.pt`` was chosen on
the validation split), so evaluating the test split here is honest. Random first
fixations and location noise are seeded per (evaluation seed, image, sample), so the
result does not depend on ``eval_batch_size``; ``eval_seeds`` seeds give mean and spread.

Top floor (:mod:`glimpse.experiments`): it rebuilds a run's agent, so it imports agents.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import torch
import tyro

from agents.evaluation import evaluate_policy, evaluate_protocols, headline_protocol
from agents.policies import POLICIES
from glimpse.experiments.playback import eval_env, load_hard_config
from glimpse.io import write_json
from glimpse.results import machine_description
from glimpse.training import load_checkpoint, resolve_device

__all__ = ["EvalConfig", "evaluate_run"]

_RunDir = Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="RUN_DIR")]


@dataclass
class EvalConfig:
    """Evaluate a RAM/DRAM run folder's checkpoint on one split (or, with
    ``all_protocols``, every protocol on val and test)."""

    run_dir: _RunDir  # type: ignore[valid-type]
    """The run folder written by ``train_ram.py`` / ``train_dram.py`` (``runs/<name>``)."""
    split: Literal["val", "test"] = "test"
    """Split of the run's dataset."""
    checkpoint: Literal["best", "last"] = "best"
    """Checkpoint of the run folder."""
    protocol: Literal["single-mean", "single-sampled", "mc"] | None = None
    """``single-mean`` (one episode, mean locations), ``single-sampled`` (one episode,
    sampled locations) or ``mc`` (M = ``mc_samples`` sampled episodes averaged); default:
    ``mc`` if ``mc_samples > 1``, else ``single-mean``."""
    mc_samples: int | None = None
    """Monte-Carlo samples per image of the ``mc`` protocol; default: the run's."""
    eval_seeds: int = 5
    """Evaluation seeds ``0 .. eval_seeds - 1`` (one suffices for a deterministic protocol:
    mean locations from the centre)."""
    all_protocols: bool = False
    """Evaluate ``single-mean``, ``single-sampled`` (and ``mc`` if ``mc_samples > 1``) on
    val and test, and write ``evaluations/protocols-<checkpoint>.json`` (what
    ``scripts/results_table.py`` reads for runs whose ``metrics.json`` predates protocols;
    ``protocols-<checkpoint>-<init>.json`` when ``init_location`` overrides the run's)."""
    init_location: Literal["center", "random"] | None = None
    """First fixation: image centre or uniformly random; default: the run's."""
    eval_batch_size: int | None = None
    """Images per evaluation batch; default: the run's (the result does not depend on it)."""
    device: str = "cpu"
    """'cpu', 'cuda[:N]' or 'auto'."""
    threads: int = 1
    """PyTorch CPU threads (0: PyTorch's default)."""

    RULES: ClassVar[dict[str, tuple]] = {
        "mc_samples": (">=", 1),
        "eval_batch_size": (">=", 1),
        "eval_seeds": (">=", 1),
        "threads": (">=", 0),
    }
    """Bounds of the numeric fields (:func:`glimpse.training.check_config`)."""


def evaluate_run(cfg: EvalConfig) -> dict[str, Any]:
    """Metrics of the run's agent with the overridden settings, also written (atomically)
    to ``<run_dir>/evaluations/``: ``<split>-<checkpoint>-<protocol>-<init>.json``
    (``error``: the mean over seeds, ``errors``, ``error_std``), or with ``all_protocols``
    ``protocols-<checkpoint>.json`` (``protocols`` as in a run's ``metrics.json``)."""
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
    if cfg.eval_seeds < 1:
        raise ValueError(f"eval_seeds must be >= 1, got {cfg.eval_seeds}")
    protocol = cfg.protocol or ("mc" if over.get("mc_samples", 1) > 1 else "single-mean")
    if protocol == "mc" and over.get("mc_samples", run_cfg.mc_samples) < 2:
        raise ValueError("protocol 'mc' needs --mc-samples >= 2")
    run_cfg = replace(run_cfg, **over, resume=False)
    ckpt = Path(cfg.run_dir) / f"{cfg.checkpoint}.pt"
    if not ckpt.is_file():
        raise ValueError(f"no checkpoint {ckpt} (expected best.pt or last.pt in the run folder)")
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    n_envs = run_cfg.eval_batch_size * run_cfg.mc_samples
    splits = ("val", "test") if cfg.all_protocols else (cfg.split,)
    envs = {s: eval_env(run_cfg, s, n_envs, device) for s in splits}
    venv = envs[splits[0]]
    glimpse_shape = venv.single_observation_space["glimpse"].shape
    policy = POLICIES[run_cfg.agent](run_cfg, glimpse_shape, venv.config.num_targets).to(device)
    policy.load_state_dict(load_checkpoint(ckpt, device)["model"])
    policy.eval()
    out_dir = Path(cfg.run_dir) / "evaluations"
    if cfg.all_protocols:
        protocols = ("single-mean", "single-sampled") + (("mc",) if run_cfg.mc_samples > 1 else ())
        report = evaluate_protocols(policy, envs, run_cfg, protocols, cfg.eval_seeds)
        result: dict[str, Any] = {
            "protocols": report,
            "headline_protocol": headline_protocol(report),
            "checkpoint": cfg.checkpoint,
            "init_location": run_cfg.init_location,
            "eval_batch_size": run_cfg.eval_batch_size,
            "machine": machine_description(device),
        }
        # the run's own first fixation: the file scripts/results_table.py reads; an
        # overridden one is kept apart (a different recipe at test time)
        own = cfg.init_location in (None, load_hard_config(cfg.run_dir).init_location)
        suffix = "" if own else f"-{run_cfg.init_location}"
        out = out_dir / f"protocols-{cfg.checkpoint}{suffix}.json"
    else:
        deterministic = protocol == "single-mean" and run_cfg.init_location == "center"
        seeds = [0] if deterministic else list(range(cfg.eval_seeds))
        runs = [
            evaluate_policy(policy, venv, run_cfg, f"{cfg.split} seed {s}", protocol, s)
            for s in seeds
        ]
        errors = torch.tensor([r["error"] for r in runs], dtype=torch.float64)
        result = {
            "error": errors.mean().item(),
            "accuracy": 1 - errors.mean().item(),
            "errors": errors.tolist(),
            "error_std": errors.std().item() if len(seeds) > 1 else 0.0,
            "eval_seeds": seeds,
            "protocol": protocol,
            "split": cfg.split,
            "checkpoint": cfg.checkpoint,
            "mc_samples": run_cfg.mc_samples if protocol == "mc" else 1,
            "init_location": run_cfg.init_location,
        }
        name = f"{cfg.split}-{cfg.checkpoint}-{protocol}"
        if protocol == "mc":
            name += str(run_cfg.mc_samples)
        out = out_dir / f"{name}-{run_cfg.init_location}.json"
    write_json(out, result)
    return result
