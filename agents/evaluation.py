"""Evaluating hard-attention policies: accuracy under one protocol (one trajectory per
image with mean or sampled locations, or Monte-Carlo averaging), every protocol over several
evaluation seeds, the headline chosen on validation, and the inference cost."""

from __future__ import annotations

from typing import Any

import torch

from agents.config import HardTrainConfig
from agents.policy import GlimpsePolicy
from agents.reinforce import PROTOCOLS, predict
from envs import GlimpseVectorEnv
from glimpse.evaluation import accuracy_metrics, evaluate, evaluate_sharded, readout_metrics
from glimpse.flops import count_flops

__all__ = [
    "evaluate_policy",
    "evaluate_protocols",
    "hard_cost",
    "headline_protocol",
    "protocol_name",
]


def evaluate_policy(
    policy: GlimpsePolicy,
    venv: GlimpseVectorEnv,
    cfg: HardTrainConfig,
    desc: str = "eval",
    protocol: str = "single-mean",
    seed: int | None = None,
) -> dict[str, float]:
    """Accuracy of ``policy`` on every image of ``venv``'s split under ``protocol`` (one of
    :data:`agents.reinforce.PROTOCOLS`; ``"mc"`` averages ``cfg.mc_samples`` episodes) and
    evaluation seed ``seed`` (default ``cfg.seed``): the first fixations and location noise
    of image ``i``, sample ``m`` come from ``(seed, i, m)``, so the result does not depend on
    ``cfg.eval_batch_size`` (shared evaluation; under ``torchrun`` every rank must call it:
    each plays its slice of the split).

    With one target per episode the classifier is also read after every glimpse:
    ``errors_by_glimpses`` lists the error after ``1 .. T`` glimpses (the last is
    ``error``), from the same episodes."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    samples = cfg.mc_samples if protocol == "mc" else 1
    sampled = protocol != "single-mean"
    seed = cfg.seed if seed is None else seed

    by_step = venv.config.num_targets == 1

    def run(idx: torch.Tensor) -> torch.Tensor:
        preds, _ = predict(policy, venv, idx, samples, sampled=sampled, seed=seed, by_step=by_step)
        return preds

    metrics = readout_metrics if by_step else accuracy_metrics
    out = evaluate_sharded(run, venv.source.labels, cfg.eval_batch_size, desc, evaluate, metrics)
    if by_step:
        out["errors_by_glimpses"] = out.pop("errors_by_step")
    return out


def protocol_name(protocol: str, mc_samples: int) -> str:
    """The results label of ``protocol``: ``single-mean``, ``single-sampled`` or ``mc<M>``."""
    return f"mc{mc_samples}" if protocol == "mc" else protocol


def evaluate_protocols(
    policy: GlimpsePolicy,
    envs: dict[str, GlimpseVectorEnv],
    cfg: HardTrainConfig,
    protocols: tuple[str, ...] = ("single-mean", "single-sampled"),
    eval_seeds: int = 5,
) -> dict[str, dict[str, Any]]:
    """Errors of ``policy`` on each split of ``envs`` (e.g. ``{"val": ..., "test": ...}``)
    under each protocol, over evaluation seeds ``0 .. eval_seeds - 1``.

    Returns ``{label: {"eval_seeds": [...], "mc_samples": M, "<split>_errors": [...],
    "<split>_error": mean, "<split>_error_std": sample std (0 for one seed)}}`` with labels
    from :func:`protocol_name`; with one target per episode also
    ``"<split>_errors_by_glimpses"`` (the error after ``1 .. T`` glimpses, mean over the
    seeds), its ``_std`` and the per-seed curves ``_seeds``. A protocol without
    randomness (mean locations from the centre, or a ``seed_free`` policy such as the
    grid scan) is evaluated with one seed only: every seed gives the same predictions.
    """
    if eval_seeds < 1:
        raise ValueError(f"eval_seeds must be >= 1, got {eval_seeds}")
    out: dict[str, dict[str, Any]] = {}
    for protocol in protocols:
        random_free = getattr(policy, "seed_free", False) or (
            protocol == "single-mean" and cfg.init_location == "center"
        )
        seeds = [0] if random_free else list(range(eval_seeds))
        label = protocol_name(protocol, cfg.mc_samples)
        res: dict[str, Any] = {
            "eval_seeds": seeds,
            "mc_samples": cfg.mc_samples if protocol == "mc" else 1,
        }
        for split, venv in envs.items():
            runs = [
                evaluate_policy(policy, venv, cfg, f"{split} {label} seed {s}", protocol, s)
                for s in seeds
            ]
            for key, name in (("error", "error"), ("digit_accuracy", "digit_error")):
                if key not in runs[0]:
                    continue
                errs = [r[key] if key == "error" else 1 - r[key] for r in runs]
                t = torch.tensor(errs, dtype=torch.float64)
                res[f"{split}_{name}s"] = errs
                res[f"{split}_{name}"] = t.mean().item()
                res[f"{split}_{name}_std"] = t.std().item() if len(errs) > 1 else 0.0
            if "errors_by_glimpses" in runs[0]:
                curves = torch.tensor([r["errors_by_glimpses"] for r in runs], dtype=torch.float64)
                res[f"{split}_errors_by_glimpses_seeds"] = curves.tolist()
                res[f"{split}_errors_by_glimpses"] = curves.mean(0).tolist()
                res[f"{split}_errors_by_glimpses_std"] = (
                    curves.std(0).tolist() if len(runs) > 1 else [0.0] * curves.shape[1]
                )
        out[label] = res
    return out


def headline_protocol(protocols: dict[str, dict[str, Any]]) -> str:
    """The single-trajectory protocol with the lower mean validation error (ties: the
    deterministic ``single-mean``): the headline, chosen on validation only."""
    single = [p for p in ("single-mean", "single-sampled") if p in protocols]
    if not single:
        raise ValueError(f"no single-trajectory protocol among {sorted(protocols)}")
    return min(single, key=lambda p: (protocols[p]["val_error"], p != "single-mean"))


def hard_cost(policy: GlimpsePolicy, venv: GlimpseVectorEnv) -> dict[str, Any]:
    """Inference FLOPs per image, glimpse pixels read per image (``steps x scales x g^2``
    plus DRAM's context view) and parameters of ``policy``. The FLOPs are counted on one
    batch of ``venv``'s split (mean locations) and divided by the episodes the batch plays:
    all ``venv.num_envs`` of them (:func:`agents.reinforce.predict` fills a short batch by
    replaying its last image), so the figure does not depend on the batch size."""
    n = min(venv.num_envs, len(venv.source))
    flops, _ = count_flops(lambda: predict(policy, venv, torch.arange(n), 1, sampled=False))
    mdp = venv.config
    pixels = mdp.max_steps * mdp.num_scales * mdp.glimpse_size**2 + mdp.context_size**2
    params = sum(p.numel() for p in policy.parameters())
    per_image = flops / venv.num_envs
    return {"inference_flops_per_image": per_image, "pixels_per_image": pixels, "params": params}
