"""Export where a hard-attention run looks: ``scripts/attention_maps.py RUN``.

Top floor (:mod:`glimpse.experiments`): it loads a run's agent, so it imports the agents.
The maps and scores themselves are :mod:`glimpse.attention`'s, shared with soft models.

For every image of the split (or its first ``--limit``), one episode with the policy's
mean locations (``single-mean``; first fixations as the run's ``init_location``) is played
and its fixations recorded. The ``.npz`` file (``numpy.load``) holds:

==================  ======================  ==============================================
key                 shape, dtype            meaning
==================  ======================  ==============================================
``indices``         ``(N,)`` int64          image indices in the split
``fixations``       ``(N, T, 2)`` float32   glimpse centres ``(x, y)`` in ``[-1, 1]``, in
                                            the order taken (``T`` = glimpses per episode)
``labels``          ``(N, L)`` int64        true labels (``L`` targets per image)
``predictions``     ``(N, L)`` int64        the agent's labels
``maps``            ``(M, H, W)`` float32   footprint maps of the first ``M = --num-maps``
                                            images (each sums to 1; ``--scales``)
``boxes``           ``(N, [L,] 4)`` float32 the digits' frames ``(x0, y0, x1, y1)`` pixels
                                            (datasets that record them)
``clutter_boxes``   ``(N, K, 4)`` float32   clutter patches (cluttered datasets)
``fixation_in_box`` ``(N, T)`` bool         fixation inside a digit's box
``mass_in_box``     ``(N,)`` float32        footprint mass inside the digits' boxes
``mass_on_clutter`` ``(N,)`` float32        footprint mass on clutter, outside the digits
``pointing``        ``(N,)`` bool           the footprint's maximum inside a digit's box
==================  ======================  ==============================================

The summary (returned, printed and written beside the ``.npz`` as JSON) holds the means:
``attention_in_box`` (fraction of fixations inside the box), ``attention_in_box_per_step``,
``attention_on_clutter`` (fraction of fixations on clutter and not on the digit),
``footprint_in_box``, ``footprint_on_clutter`` and ``pointing``.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
import torch
import tyro

from agents.reinforce import predict
from glimpse.attention import fixations_in_boxes, footprint_map, mass_in_boxes, pointing_hits
from glimpse.data import get_dataset
from glimpse.experiments.playback import load_agent
from glimpse.io import atomic_write, write_json
from glimpse.training import Rule, check_config, resolve_device

__all__ = ["AttentionMapsConfig", "export_attention_maps"]


@dataclass
class AttentionMapsConfig:
    """Where a hard-attention run looks: fixations, footprint maps and box scores."""

    run_dir: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="RUN_DIR")]
    """The run folder of a RAM/DRAM run (``runs/<name>``)."""
    split: Literal["val", "test"] = "test"
    """Split of the run's dataset."""
    checkpoint: Literal["best", "last"] = "best"
    """Checkpoint of the run folder."""
    out: str | None = None
    """The ``.npz`` to write (default ``<run_dir>/attention/<split>-<checkpoint>.npz``)."""
    limit: int = 0
    """Only the first this many images of the split (0: all)."""
    num_maps: int = 100
    """Footprint maps stored for the first this many images (maps are large)."""
    scales: Literal["finest", "all"] = "finest"
    """Footprint of the finest patch, or of every scale sharing each fixation's mass."""
    batch_size: int = 500
    """Episodes per batch."""
    device: str = "cpu"
    """'cpu', 'cuda[:N]' or 'auto'."""
    threads: int = 1
    """PyTorch CPU threads (0: PyTorch's default)."""

    RULES: ClassVar[dict[str, Rule]] = {
        "limit": (">=", 0),
        "num_maps": (">=", 0),
        "batch_size": (">=", 1),
        "threads": (">=", 0),
    }


def _boxes_of(cfg: Any, split: str, n: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The digits' boxes and the clutter boxes of the first ``n`` images, if recorded."""
    ds = get_dataset(cfg.task, split, cfg.data_root, val_size=cfg.val_size)
    boxes = getattr(ds, "boxes", None)
    clutter = getattr(ds, "clutter_boxes", None)
    return (
        None if boxes is None else boxes[:n].float(),
        None if clutter is None else clutter[:n].float(),
    )


def export_attention_maps(cfg: AttentionMapsConfig) -> dict[str, Any]:
    """Play the run's agent on ``cfg.split``, write the ``.npz`` (module docstring) and
    its summary JSON atomically, and return the summary."""
    check_config(cfg)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    policy, run_cfg, venv = load_agent(
        cfg.run_dir, device, cfg.checkpoint, cfg.split, num_envs=cfg.batch_size
    )
    total = len(venv.source)
    n = min(cfg.limit, total) if cfg.limit else total
    h, w = venv.source.images.shape[-2:]
    mdp = venv.config
    fixations, labels, preds = [], [], []
    for start in range(0, n, cfg.batch_size):
        idx = torch.arange(start, min(start + cfg.batch_size, n), device=device)
        p, ro = predict(policy, venv, idx)
        m = idx.numel()
        fixations.append(ro.locations[:-1, :m].transpose(0, 1).float().cpu())
        labels.append(ro.labels[:m].cpu())
        preds.append(p.cpu())
    fix = torch.cat(fixations)
    boxes, clutter = _boxes_of(run_cfg, cfg.split, n)
    out: dict[str, np.ndarray] = {
        "indices": np.arange(n, dtype=np.int64),
        "fixations": fix.numpy(),
        "labels": torch.cat(labels).numpy(),
        "predictions": torch.cat(preds).numpy(),
    }
    maps = []
    scores: dict[str, list[torch.Tensor]] = {k: [] for k in ("in_box", "on_clutter", "point")}
    for start in range(0, n, cfg.batch_size):
        sl = slice(start, min(start + cfg.batch_size, n))
        fm = footprint_map(
            fix[sl].double(), h, w, mdp.glimpse_size, mdp.num_scales, mdp.scale_factor, cfg.scales
        )
        if start < cfg.num_maps:
            maps.append(fm[: max(0, cfg.num_maps - start)].float())
        if boxes is not None:
            digit = boxes[sl].double()
            digit = digit if digit.ndim == 3 else digit[:, None]
            inside = mass_in_boxes(fm, digit)
            scores["in_box"].append(inside)
            scores["point"].append(pointing_hits(fm, digit))
            if clutter is not None:
                both = torch.cat([digit, clutter[sl].double()], dim=1)
                scores["on_clutter"].append(mass_in_boxes(fm, both) - inside)
    out["maps"] = torch.cat(maps).numpy() if maps else np.zeros((0, h, w), np.float32)
    summary: dict[str, Any] = {
        "run": str(cfg.run_dir),
        "split": cfg.split,
        "checkpoint": cfg.checkpoint,
        "protocol": "single-mean",
        "images": n,
        "scales": cfg.scales,
        "accuracy": float((out["predictions"] == out["labels"]).all(1).mean()),
    }
    if boxes is not None:
        hit = fixations_in_boxes(fix, boxes, h, w)  # (N, T)
        out["boxes"] = boxes.numpy()
        out["fixation_in_box"] = hit.numpy()
        out["mass_in_box"] = torch.cat(scores["in_box"]).float().numpy()
        out["pointing"] = torch.cat(scores["point"]).numpy()
        summary["attention_in_box"] = float(hit.float().mean())
        summary["attention_in_box_per_step"] = hit.float().mean(0).tolist()
        summary["footprint_in_box"] = float(out["mass_in_box"].mean())
        summary["pointing"] = float(out["pointing"].mean())
        if clutter is not None:
            on = fixations_in_boxes(fix, clutter, h, w) & ~hit
            out["clutter_boxes"] = clutter.numpy()
            out["mass_on_clutter"] = torch.cat(scores["on_clutter"]).float().numpy()
            summary["attention_on_clutter"] = float(on.float().mean())
            summary["footprint_on_clutter"] = float(out["mass_on_clutter"].mean())
    path = (
        Path(cfg.out)
        if cfg.out
        else Path(cfg.run_dir) / "attention" / (f"{cfg.split}-{cfg.checkpoint}.npz")
    )
    buf = io.BytesIO()
    np.savez_compressed(buf, **out)
    atomic_write(path, lambda f: f.write(buf.getvalue()))
    write_json(path.with_suffix(".json"), summary)
    summary["npz"] = str(path)
    return summary
