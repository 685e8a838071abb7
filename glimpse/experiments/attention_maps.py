"""Export where a run looks: ``scripts/attention_maps.py RUN`` (hard and soft runs).

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

A soft run (``scripts/train_soft.py``: its ``config.json`` has a ``module``) is exported
by :func:`_export_soft`: the same file, with no ``fixations`` and, instead of ``maps``,
``gradcam_maps`` (Grad-CAM of the predicted class on the last feature stage,
:func:`glimpse.attention.grad_cam`) and, when the run's block (or STN) has a spatial map,
``module_maps`` (its own map, :func:`soft_baselines.attention_maps.soft_attention_map`),
both ``(M, H, W)`` float32 summing to 1; per image ``{gradcam,module}_mass_in_box``,
``{gradcam,module}_mass_on_clutter`` ``(N,)`` float32 and ``{gradcam,module}_pointing``
``(N,)`` bool. Summary: ``{gradcam,module}_in_box``, ``{gradcam,module}_on_clutter``,
``{gradcam,module}_pointing``, ``module_map`` (whether the run has one) and
``attention_in_box`` / ``attention_on_clutter`` / ``pointing`` of the module map if there
is one, else of Grad-CAM (``attention_map`` says which).
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
from glimpse.attention import (
    fixations_in_boxes,
    footprint_map,
    grad_cam,
    mass_in_boxes,
    pointing_hits,
)
from glimpse.data import ImageSource, get_dataset
from glimpse.experiments.playback import load_agent
from glimpse.io import atomic_write, read_json, write_json
from glimpse.tasks import get_task
from glimpse.training import Rule, check_config, load_checkpoint, load_run_config, resolve_device
from soft_baselines.attention_maps import soft_attention_map
from soft_baselines.train import SoftTrainConfig, build_model

__all__ = ["AttentionMapsConfig", "export_attention_maps"]


@dataclass
class AttentionMapsConfig:
    """Where a hard-attention run looks: fixations, footprint maps and box scores."""

    run_dir: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="RUN_DIR")]
    """The run folder of a RAM/DRAM run or a soft run (``runs/<name>``)."""
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
    config = Path(cfg.run_dir) / "config.json"
    if config.is_file() and "module" in read_json(config):  # a soft run
        return _write(cfg, *_export_soft(cfg, device))
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
    return _write(cfg, out, summary)


def _export_soft(
    cfg: AttentionMapsConfig, device: torch.device
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The arrays and summary of a soft run (module docstring): Grad-CAM and, if the
    run's block has one, its own spatial map, scored against the recorded boxes."""
    run_cfg = load_run_config(cfg.run_dir, SoftTrainConfig)
    ckpt = Path(cfg.run_dir) / f"{cfg.checkpoint}.pt"
    if not ckpt.is_file():
        raise ValueError(f"no checkpoint {ckpt} (expected best.pt or last.pt in the run folder)")
    task = get_task(run_cfg.dataset)
    lim = {"limit": cfg.limit} if cfg.limit and task.generated else {}
    ds = task.load(cfg.split, run_cfg.data_root, val_size=run_cfg.val_size, **lim)
    src = ImageSource.from_any(ds, device=device)
    n = min(cfg.limit, len(src)) if cfg.limit else len(src)
    model = build_model(run_cfg, src.image_shape, len(ds.classes)).to(device)
    model.load_state_dict(load_checkpoint(ckpt, device)["model"])
    model.eval()
    boxes, clutter = (
        None if getattr(ds, key, None) is None else torch.as_tensor(getattr(ds, key))[:n].double()
        for key in ("boxes", "clutter_boxes")
    )
    kinds: dict[str, dict[str, list[torch.Tensor]]] = {}
    preds = []
    for start in range(0, n, cfg.batch_size):
        idx = torch.arange(start, min(start + cfg.batch_size, n), device=device)
        x, _ = src.get(idx)
        with torch.no_grad():
            preds.append(model(x).argmax(1).cpu())
        found = {"gradcam": grad_cam(model, model.features[-1], x), "module": None}
        found["module"] = soft_attention_map(model, x)[0]
        for kind, m in found.items():
            if m is None:
                continue
            got = kinds.setdefault(kind, {"maps": [], "in_box": [], "on_clutter": [], "point": []})
            m = m.double().cpu()
            if start < cfg.num_maps:
                got["maps"].append(m[: cfg.num_maps - start].float())
            if boxes is not None:
                digit = boxes[idx.cpu()]
                digit = digit if digit.ndim == 3 else digit[:, None]
                inside = mass_in_boxes(m, digit)
                got["in_box"].append(inside)
                got["point"].append(pointing_hits(m, digit))
                if clutter is not None:
                    both = torch.cat([digit, clutter[idx.cpu()]], dim=1)
                    got["on_clutter"].append(mass_in_boxes(m, both) - inside)
    h, w = src.image_shape[1:]
    out: dict[str, np.ndarray] = {
        "indices": np.arange(n, dtype=np.int64),
        "labels": src.labels[:n].reshape(n, -1).cpu().numpy(),
        "predictions": torch.cat(preds).reshape(n, -1).numpy(),
    }
    summary: dict[str, Any] = {
        "run": str(cfg.run_dir),
        "split": cfg.split,
        "checkpoint": cfg.checkpoint,
        "protocol": "deterministic",
        "images": n,
        "module": run_cfg.module,
        "module_map": "module" in kinds,
        "accuracy": float((out["predictions"] == out["labels"]).all(1).mean()),
    }
    if boxes is not None:
        out["boxes"] = boxes.float().numpy()
    if clutter is not None:
        out["clutter_boxes"] = clutter.float().numpy()
    for kind, got in kinds.items():
        maps = got["maps"]
        out[f"{kind}_maps"] = torch.cat(maps).numpy() if maps else np.zeros((0, h, w), np.float32)
        for key, name, dtype in (
            ("in_box", "mass_in_box", np.float32),
            ("on_clutter", "mass_on_clutter", np.float32),
            ("point", "pointing", bool),
        ):
            if got[key]:
                out[f"{kind}_{name}"] = torch.cat(got[key]).numpy().astype(dtype)
                score = "pointing" if key == "point" else key
                summary[f"{kind}_{score}"] = float(out[f"{kind}_{name}"].mean())
    best = "module" if "module" in kinds else "gradcam"
    summary["attention_map"] = best
    for key, score in (("in_box", "attention_in_box"), ("on_clutter", "attention_on_clutter")):
        if f"{best}_{key}" in summary:
            summary[score] = summary[f"{best}_{key}"]
    if f"{best}_pointing" in summary:
        summary["pointing"] = summary[f"{best}_pointing"]
    return out, summary


def _write(
    cfg: AttentionMapsConfig, out: dict[str, np.ndarray], summary: dict[str, Any]
) -> dict[str, Any]:
    """Write ``out`` as the ``.npz`` and ``summary`` beside it as JSON (atomically)."""
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
