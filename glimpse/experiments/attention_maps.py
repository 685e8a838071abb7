"""Export where a run looks: ``scripts/attention_maps.py RUN`` (hard and soft runs).

Top floor (:mod:`glimpse.experiments`): the run is opened and its maps computed by the one
API, :func:`glimpse.experiments.where.open_run` and :func:`~glimpse.experiments.where.where`;
the scores are :mod:`glimpse.attention`'s (:func:`~glimpse.attention.map_scores`,
:func:`~glimpse.attention.fixation_scores`), the same code for hard and soft runs.

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
``attention_in_box`` (fraction of fixations inside the box), ``attention_in_box_per_step``
(the same per glimpse step: the box hit of step ``t``, a list of ``T``),
``attention_on_clutter`` (fraction of fixations on clutter and not on the digit),
``attention_on_clutter_per_step``, ``footprint_in_box``, ``footprint_on_clutter`` and
``pointing``, and ``chance_in_box`` (the mean share of the image inside the digits' boxes:
what a uniform map or a uniformly random fixation scores; read both kinds of
``attention_in_box`` against it). ``scripts/results_table.py`` reads ``attention_in_box`` and
``attention_on_clutter`` of ``<run>/attention/test-best.json`` into ``docs/results.csv``.

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
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
import torch
import tyro
from PIL import Image, ImageDraw
from torch import Tensor

from glimpse.attention import fixation_scores, map_scores, mass_in_boxes
from glimpse.experiments.where import OpenRun, open_run, where
from glimpse.io import atomic_write, write_json
from glimpse.training import Rule, check_config, resolve_device
from glimpse.viz import _draw_box, _draw_text, _font, overlay_map

__all__ = ["FIGURE_MAPS", "AttentionMapsConfig", "attention_figure", "export_attention_maps"]


@dataclass
class AttentionMapsConfig:
    """Where a run looks: fixations (hard runs), attention maps and box scores."""

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
    """Maps stored for the first this many images (maps are large)."""
    scales: Literal["finest", "all"] = "finest"
    """Hard runs: footprint of the finest patch, or of every scale sharing each fixation's
    mass."""
    batch_size: int = 500
    """Episodes (hard) or images (soft) per batch."""
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


class _Collect:
    """The stored maps (first ``num_maps``) and per-image scores of one kind of map."""

    def __init__(self, num_maps: int) -> None:
        self.num_maps, self.seen = num_maps, 0
        self.maps: list[Tensor] = []
        self.scores: dict[str, list[Tensor]] = {}

    def add(self, maps: Tensor, boxes: Tensor | None, clutter: Tensor | None) -> None:
        keep = max(0, self.num_maps - self.seen)
        self.seen += maps.shape[0]
        if keep:
            self.maps.append(maps[:keep].float().cpu())
        if boxes is not None:
            for key, value in map_scores(maps.double().cpu(), boxes.double(), clutter).items():
                self.scores.setdefault(key, []).append(value)

    def arrays(self, prefix: str, h: int, w: int) -> dict[str, np.ndarray]:
        """``{prefix}maps`` and ``{prefix}mass_in_box`` / ``mass_on_clutter`` / ``pointing``."""
        maps = torch.cat(self.maps).numpy() if self.maps else np.zeros((0, h, w), np.float32)
        out = {f"{prefix}maps": maps}
        for key, values in self.scores.items():
            dtype = bool if key == "pointing" else np.float32
            out[f"{prefix}{key}"] = torch.cat(values).numpy().astype(dtype)
        return out


def export_attention_maps(cfg: AttentionMapsConfig) -> dict[str, Any]:
    """Open the run, compute where its model looks on ``cfg.split`` (one :func:`where` per
    batch), write the ``.npz`` (module docstring) and its summary JSON atomically, and
    return the summary."""
    check_config(cfg)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    run = open_run(cfg.run_dir, cfg.split, cfg.checkpoint, device, cfg.batch_size, cfg.limit)
    n = min(cfg.limit, len(run)) if cfg.limit else len(run)
    export = _export_hard if run.kind == "hard" else _export_soft
    out, summary = export(cfg, run, n)
    if run.boxes is not None:
        summary["chance_in_box"] = _chance_in_box(run, n)
    summary = {
        "run": str(cfg.run_dir),
        "split": cfg.split,
        "checkpoint": cfg.checkpoint,
        "images": n,
        **summary,
        "accuracy": float((out["predictions"] == out["labels"]).all(1).mean()),
    }
    if run.boxes is not None:
        out["boxes"] = run.boxes[:n].numpy()
    if run.clutter_boxes is not None:
        out["clutter_boxes"] = run.clutter_boxes[:n].numpy()
    return _write(cfg, out, summary)


def _chance_in_box(run: OpenRun, n: int) -> float:
    """The in-box score of a model that looks nowhere in particular: the mean share of the
    image area inside the digits' boxes (a uniform map's mass in the box, and the chance
    that a uniformly random fixation lands in it): the level to read both kinds of
    ``attention_in_box`` against."""
    source = run.images.source if hasattr(run.images, "source") else run.images
    h, w = source.images.shape[-2:]
    shares = []
    for _, boxes, _ in _batches(run, n, 1000):
        uniform = torch.full((boxes.shape[0], h, w), 1.0 / (h * w), dtype=torch.float64)
        shares.append(mass_in_boxes(uniform, boxes.double()))
    return float(torch.cat(shares).mean())


def _batches(run: OpenRun, n: int, size: int):
    """``(indices, digit boxes (b, n, 4) or None, clutter boxes or None)`` per batch."""
    for start in range(0, n, size):
        idx = torch.arange(start, min(start + size, n))
        boxes = None if run.boxes is None else run.boxes[idx]
        if boxes is not None and boxes.ndim == 2:
            boxes = boxes[:, None]
        clutter = None if run.clutter_boxes is None else run.clutter_boxes[idx].double()
        yield idx, boxes, clutter


def _labels(run: OpenRun, n: int) -> np.ndarray:
    images = run.images
    source = images.source if hasattr(images, "source") else images
    return source.labels[:n].reshape(n, -1).cpu().numpy()


def _export_hard(
    cfg: AttentionMapsConfig, run: OpenRun, n: int
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """A hard run: fixations (``single-mean``), footprint maps, fixation and map scores."""
    _, _, h, w = run.images.source.images.shape
    maps = _Collect(cfg.num_maps)
    fixations, preds, hits = [], [], {}
    for idx, boxes, clutter in _batches(run, n, cfg.batch_size):
        found = where(run.model, run.images, indices=idx)
        fix = found.fixations.cpu()
        fixations.append(fix)
        preds.append(found.predictions.cpu())
        name = "footprint" if cfg.scales == "finest" else "footprint_all"
        maps.add(found.map(name), boxes, clutter)
        if boxes is not None:
            for key, value in fixation_scores(fix, boxes, h, w, clutter).items():
                hits.setdefault(key, []).append(value)
    out: dict[str, np.ndarray] = {
        "indices": np.arange(n, dtype=np.int64),
        "fixations": torch.cat(fixations).numpy(),
        "labels": _labels(run, n),
        "predictions": torch.cat(preds).numpy(),
        **maps.arrays("", h, w),
    }
    summary: dict[str, Any] = {"protocol": "single-mean", "scales": cfg.scales}
    if "fixation_in_box" in hits:
        hit = torch.cat(hits["fixation_in_box"]).float()  # (N, T)
        out["fixation_in_box"] = hit.bool().numpy()
        summary["attention_in_box"] = float(hit.mean())
        summary["attention_in_box_per_step"] = hit.mean(0).tolist()
        summary["footprint_in_box"] = float(out["mass_in_box"].mean())
        summary["pointing"] = float(out["pointing"].mean())
    if "fixation_on_clutter" in hits:
        on = torch.cat(hits["fixation_on_clutter"]).float()
        summary["attention_on_clutter"] = float(on.mean())
        summary["attention_on_clutter_per_step"] = on.mean(0).tolist()
        summary["footprint_on_clutter"] = float(out["mass_on_clutter"].mean())
    return out, summary


def _export_soft(
    cfg: AttentionMapsConfig, run: OpenRun, n: int
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """A soft run (module docstring): Grad-CAM and, if the run's block has one, its own
    spatial map, scored against the recorded boxes."""
    kinds = {"gradcam": _Collect(cfg.num_maps), "module": _Collect(cfg.num_maps)}
    preds = []
    for idx, boxes, clutter in _batches(run, n, cfg.batch_size):
        found = where(run.model, run.images, indices=idx, batch_size=cfg.batch_size)
        preds.append(found.predictions.cpu())
        for kind, got in kinds.items():
            m = found.map(kind)
            if m is not None:
                got.add(m, boxes, clutter)
    h, w = run.images.image_shape[1:]
    out: dict[str, np.ndarray] = {
        "indices": np.arange(n, dtype=np.int64),
        "labels": _labels(run, n),
        "predictions": torch.cat(preds).numpy(),
    }
    has_module = kinds["module"].seen > 0
    summary: dict[str, Any] = {
        "protocol": "deterministic",
        "module": run.config.module,
        "module_map": has_module,
    }
    for kind, got in kinds.items():
        if not got.seen:
            continue
        arrays = got.arrays(f"{kind}_", h, w)
        out.update(arrays)
        for key, score in (("mass_in_box", "in_box"), ("mass_on_clutter", "on_clutter")):
            if f"{kind}_{key}" in arrays:
                summary[f"{kind}_{score}"] = float(arrays[f"{kind}_{key}"].mean())
        if f"{kind}_pointing" in arrays:
            summary[f"{kind}_pointing"] = float(arrays[f"{kind}_pointing"].mean())
    best = "module" if has_module else "gradcam"
    summary["attention_map"] = best
    for key, score in (
        ("in_box", "attention_in_box"),
        ("on_clutter", "attention_on_clutter"),
        ("pointing", "pointing"),
    ):
        if f"{best}_{key}" in summary:
            summary[score] = summary[f"{best}_{key}"]
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


# ------------------------------------------------------------------- side by side
FIGURE_MAPS = ("maps", "module_maps", "gradcam_maps")
"""The map of an export drawn by :func:`attention_figure`, in order of preference: a hard
run's fixation footprint, a soft block's own map, else its Grad-CAM."""


def attention_figure(
    npz_paths: Sequence[str | Path],
    out: str | Path,
    names: Sequence[str] | None = None,
    num_images: int = 6,
    upscale: int = 3,
) -> Path:
    """Where several models look on the same images, side by side: one row per export of
    :func:`export_attention_maps` (same dataset and split), one column per image (the
    first ``num_images``), each cell the image with the row's map drawn over it
    (:data:`FIGURE_MAPS`) and the digit's box outlined in green. The row's name and its
    ``attention_in_box`` (with the split's ``chance_in_box``) head the row. Raises
    ``ValueError`` when the exports are not of the same images."""
    if not npz_paths:
        raise ValueError("attention_figure needs at least one export (.npz)")
    names = list(names) if names else [Path(p).parent.parent.name for p in npz_paths]
    if len(names) != len(npz_paths):
        raise ValueError(f"{len(names)} names for {len(npz_paths)} exports")
    loaded = []
    for path in npz_paths:
        z = np.load(path)
        summary = json.loads(Path(path).with_suffix(".json").read_text())
        key = next((k for k in FIGURE_MAPS if k in z.files), None)
        if key is None:
            raise ValueError(f"{path}: no maps stored (export with --num-maps > 0)")
        loaded.append((z, summary, key))
    first_z, first_summary, _ = loaded[0]
    n = min(num_images, *(z[key].shape[0] for z, _, key in loaded))
    for (z, summary, _), path in zip(loaded, npz_paths, strict=True):
        if summary["split"] != first_summary["split"] or not np.array_equal(
            z["labels"][:n], first_z["labels"][:n]
        ):
            raise ValueError(f"{path}: not the same images as {npz_paths[0]}")
    run = open_run(first_summary["run"], first_summary["split"], limit=n)
    source = run.images.source if hasattr(run.images, "source") else run.images
    images = source.images[:n].cpu()
    boxes = first_z["boxes"][:n] if "boxes" in first_z.files else None
    h, w = images.shape[-2:]
    label_h, pad = 14, 2
    cell_w, cell_h = w * upscale + pad, h * upscale + pad
    canvas = np.full((len(loaded) * (cell_h + label_h), n * cell_w, 3), 255, np.uint8)
    texts = []
    for row, (z, summary, key) in enumerate(loaded):
        top = row * (cell_h + label_h) + label_h
        for col in range(n):
            cell = overlay_map(images[col], z[key][col], upscale=upscale)
            if boxes is not None:
                box = np.asarray(boxes[col]).reshape(-1, 4)
                for b in box:
                    _draw_box(cell, [v * upscale for v in b], (0, 170, 0), 1)
            canvas[top : top + h * upscale, col * cell_w : col * cell_w + w * upscale] = cell
        score = summary.get("attention_in_box")
        # the same images: any export's chance level is every row's
        chance = next((x[1]["chance_in_box"] for x in loaded if "chance_in_box" in x[1]), None)
        kind = {"maps": "fixations", "module_maps": "module map", "gradcam_maps": "Grad-CAM"}[key]
        text = f"{names[row]} ({kind})"
        if score is not None:
            text += f": in box {score:.2f}"
            if chance is not None:
                text += f" (chance {chance:.2f})"
        texts.append((row * (cell_h + label_h), text))
    img = Image.fromarray(canvas)
    draw = ImageDraw.Draw(img)
    font = _font(11)
    for y, text in texts:
        _draw_text(draw, (2, y + 1), text, font, (0, 0, 0), (255, 255, 255))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    img.save(out)
    return out
