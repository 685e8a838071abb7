"""Where a model looks: one function, :func:`where`, for hard agents and soft models alike.

``where(model, images)`` returns a :class:`Where`: per image a **spatial attention
distribution over the input image** (``(B, H, W)``, non-negative, summing to one: the common
form that :mod:`glimpse.attention` scores and :mod:`glimpse.viz` draws) and the raw form it
came from:

- **hard agents** (RAM and DRAM, trained by REINFORCE or the PPO hybrid; the parts agent
  :class:`agents.parts.PartsNet`; an SB3 ``RecurrentPPO`` over the glimpse env): the
  episode is played through the env with the agent's deterministic test-time policy (mean
  locations; most likely parts; SB3's ``deterministic=True``), and the result holds the
  fixations per step, their glimpse boxes (:func:`glimpse.retina.patch_boxes`, the geometry
  the retina reads) and the footprint of the boxes (:func:`glimpse.attention.footprint_map`)
  of the finest scale (``maps``) and of all scales weighted equally (``maps_all_scales``);
- **soft models** (:class:`soft_baselines.backbones.SmallCNN` with a registered block, an
  STN front end, or plain): ``maps`` is the model's own map
  (:func:`soft_baselines.attention_maps.soft_attention_map`; the blocks' raw maps in
  ``raw``), or ``None`` with the reason in ``without`` when no module has a spatial map
  (channel-only blocks, the plain CNN: declared, never faked); ``gradcam`` is Grad-CAM of
  the predicted class on the last feature stage (:func:`glimpse.attention.grad_cam`), the
  common baseline every CNN gets.

Why this lives on the top floor: the dispatch needs the agents (their predict functions)
and the soft models (the attention hook), and a hard agent's fixations exist only by
playing episodes through :mod:`envs` (agents never crop images themselves), which the
ground floor may not import. A ground-floor protocol (``model.where(images)``) would push
env construction into every agent family and the soft registry; here each family's
existing, tested predict function is called once, and everything below the dispatch (maps,
scores) is :mod:`glimpse.attention`'s, shared by both kinds.

:func:`open_run` turns a run folder into ``(model, images)`` for :func:`where`
(``where("runs/x", "test")`` does both); ``scripts/attention_maps.py``
(:mod:`glimpse.experiments.attention_maps`) exports and scores through it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from torch import Tensor, nn

from agents.parts import PartsNet, predict_parts
from agents.policy import GlimpsePolicy
from agents.reinforce import predict
from agents.sb3 import sb3_predict
from envs import GlimpseVectorEnv, MDPConfig
from glimpse.attention import footprint_map, grad_cam
from glimpse.data import ImageSource, get_dataset
from glimpse.experiments.playback import load_agent
from glimpse.io import read_json
from glimpse.retina import patch_boxes
from glimpse.tasks import get_task
from glimpse.training import load_checkpoint, load_run_config
from soft_baselines.attention_maps import attention_blocks, soft_attention_map
from soft_baselines.train import SoftTrainConfig, build_model

__all__ = ["MapName", "OpenRun", "Where", "open_run", "where"]

MapName = Literal["footprint", "footprint_all", "module", "gradcam"]
"""The maps a :class:`Where` may hold (:meth:`Where.map`)."""


@dataclass
class Where:
    """Where a model looked at ``B`` images of size ``H x W`` (:func:`where`).

    Every map is ``(B, H, W)``, non-negative, summing to one per image, or ``None``.
    """

    kind: Literal["hard", "soft"]
    """``"hard"`` (glimpse agent) or ``"soft"`` (CNN with or without an attention module)."""
    maps: Tensor | None
    """The model's own distribution: the finest-scale footprint (hard), the module's map
    (soft), ``None`` where the model declares none (reason in ``without``)."""
    predictions: Tensor
    """``(B, L)`` long: the model's labels (``L`` targets per image)."""
    maps_all_scales: Tensor | None = None
    """Hard: the footprint with every scale's patch sharing each fixation's mass."""
    gradcam: Tensor | None = None
    """Soft: Grad-CAM of the predicted class on the last feature stage."""
    fixations: Tensor | None = None
    """Hard: glimpse centres ``(x, y)`` in ``[-1, 1]``, ``(B, T, 2)`` in the order taken,
    or ``(B, S, K, 2)`` for the parts agent (``K`` parts per step)."""
    glimpse_boxes: Tensor | None = None
    """Hard: pixel boxes ``(x0, y0, x1, y1)`` of every scale's patch, ``fixations``'
    leading shape then ``(k, 4)`` (finest scale first)."""
    raw: dict[str, Tensor] = field(default_factory=dict)
    """Soft: module path -> that block's raw map ``(B, h, w)`` at its own resolution."""
    without: dict[str, str] = field(default_factory=dict)
    """Soft: module path (``""``: the model) -> why it gives no spatial map."""

    def map(self, name: MapName) -> Tensor | None:
        """One of the maps by name: ``footprint`` (finest scale), ``footprint_all``,
        ``module`` (the soft module's own map) or ``gradcam``."""
        hard = self.kind == "hard"
        table = {
            "footprint": self.maps if hard else None,
            "footprint_all": self.maps_all_scales,
            "module": None if hard else self.maps,
            "gradcam": self.gradcam,
        }
        if name not in table:
            raise ValueError(f"map name must be one of {', '.join(table)}, got {name!r}")
        return table[name]


def _is_hard(model: Any) -> bool:
    return isinstance(model, GlimpsePolicy | PartsNet | BaseAlgorithm)


def _source(images: Any, num_targets: int = 1) -> ImageSource:
    """``images`` as an :class:`ImageSource` (an env's own source; a ``(B, C, H, W)``
    tensor gets placeholder labels, which only the env's reward reads)."""
    if isinstance(images, GlimpseVectorEnv):
        return images.source
    if isinstance(images, ImageSource):
        return images
    if isinstance(images, Tensor):
        if images.ndim != 4:
            raise ValueError(f"images must have shape (B, C, H, W), got {tuple(images.shape)}")
        shape = (images.shape[0],) if num_targets == 1 else (images.shape[0], num_targets)
        return ImageSource(images, torch.zeros(shape, dtype=torch.long, device=images.device))
    raise ValueError(
        "images must be a (B, C, H, W) tensor, an ImageSource, a GlimpseVectorEnv (hard "
        f"agents) or, with a run folder as the model, a split name; got {type(images).__name__}"
    )


def _indices(indices: Tensor | None, n: int) -> Tensor:
    idx = torch.arange(n) if indices is None else torch.as_tensor(indices, dtype=torch.long)
    idx = idx.reshape(-1).cpu()
    if idx.numel() == 0 or int(idx.min()) < 0 or int(idx.max()) >= n:
        raise ValueError(f"indices must be non-empty and lie in [0, {n}), got {idx.tolist()}")
    return idx


def _play(model: Any, venv: GlimpseVectorEnv, idx: Tensor, sb3_grid: int | None):
    """``(predictions (n, L), fixations)`` of the agent's deterministic episodes."""
    n = idx.numel()
    if isinstance(model, PartsNet):
        preds, ro = predict_parts(model, venv, idx)
        return preds.reshape(n, 1), ro.locations[:, :n].transpose(0, 1)  # (n, S, K, 2)
    if isinstance(model, GlimpsePolicy):
        preds, ro = predict(model, venv, idx)  # mean locations: single-mean
        return preds, ro.locations[:-1, :n].transpose(0, 1)  # the glimpses taken (n, T, 2)
    if sb3_grid is None:
        raise ValueError("an SB3 agent needs sb3_grid (the run's --sb3-grid) to decode actions")
    return sb3_predict(model, venv, idx, sb3_grid)


def _where_hard(
    model: Any,
    images: Any,
    idx: Tensor | None,
    mdp: MDPConfig | None,
    batch_size: int,
    sb3_grid: int | None,
) -> Where:
    if isinstance(images, GlimpseVectorEnv):
        venv = images
    else:
        if mdp is None:
            raise ValueError("a hard agent needs the env's MDPConfig (mdp=...) or an env")
        src = _source(images, mdp.num_targets)
        num = min(batch_size, len(src) if idx is None else int(torch.as_tensor(idx).numel()))
        venv = GlimpseVectorEnv(src, num, mdp, device=src.images.device, shuffle=False)
    idx = _indices(idx, len(venv.source))
    preds, fixations = [], []
    for chunk in idx.split(venv.num_envs):
        p, f = _play(model, venv, chunk, sb3_grid)
        preds.append(p.reshape(chunk.numel(), -1))
        fixations.append(f.float())
    fix = torch.cat(fixations)
    cfg = venv.config
    _, _, h, w = venv.source.images.shape
    geometry = (cfg.glimpse_size, cfg.num_scales, cfg.scale_factor)
    flat = fix.reshape(fix.shape[0], -1, 2)  # parts: every part of every step
    boxes = patch_boxes(flat.reshape(-1, 2), h, w, *geometry)

    def footprint(scales: Literal["finest", "all"]) -> Tensor:  # in float64, 64 at a time
        parts = [footprint_map(f.double(), h, w, *geometry, scales=scales) for f in flat.split(64)]
        return torch.cat(parts).to(fix.dtype)

    return Where(
        kind="hard",
        maps=footprint("finest"),
        maps_all_scales=footprint("all"),
        predictions=torch.cat(preds),
        fixations=fix,
        glimpse_boxes=boxes.reshape(*fix.shape[:-1], *boxes.shape[1:]),
    )


def _last_stage(model: nn.Module) -> nn.Module:
    """Grad-CAM's layer: the last feature stage (``model.features[-1]``, SmallCNN's layout;
    a torchvision/timm ResNet's ``layer4``)."""
    features = getattr(model, "features", None)
    if isinstance(features, nn.Sequential) and len(features):
        return features[-1]
    if isinstance(getattr(model, "layer4", None), nn.Module):
        return model.layer4
    raise ValueError(
        f"{type(model).__name__} has no features[-1] or layer4: pass gradcam_layer=<module>"
    )


def _where_soft(
    model: nn.Module,
    images: Any,
    idx: Tensor | None,
    batch_size: int,
    gradcam: bool,
    gradcam_layer: nn.Module | None,
) -> Where:
    src = _source(images)
    idx = _indices(idx, len(src))
    layer = (gradcam_layer or _last_stage(model)) if gradcam else None
    blocks = attention_blocks(model)
    was_training = model.training
    model.eval()
    preds, maps, cams, raws = [], [], [], []
    try:
        for chunk in idx.split(batch_size):
            x, _ = src.get(chunk.to(src.images.device))
            with torch.no_grad():
                preds.append(model(x).argmax(1).reshape(chunk.numel(), -1))
            m, raw = soft_attention_map(model, x)
            maps.append(m)
            raws.append(raw)
            if layer is not None:
                cams.append(grad_cam(model, layer, x))
    finally:
        model.train(was_training)
    without = {}
    for path, _, entry in blocks:
        if not entry.spatial_map:
            without[path] = f"{entry.name}: no spatial map (channel attention only)"
        elif path not in raws[0]:
            without[path] = f"{entry.name}: this instance has no spatial part"
    if not blocks:
        without[""] = "no registered attention module (a plain CNN): Grad-CAM only"
    return Where(
        kind="soft",
        maps=None if maps[0] is None else torch.cat(maps),
        predictions=torch.cat(preds),
        gradcam=torch.cat(cams) if cams else None,
        raw={k: torch.cat([r[k] for r in raws]) for k in raws[0]},
        without=without,
    )


@dataclass
class OpenRun:
    """A run folder opened for :func:`where` (:func:`open_run`)."""

    model: Any
    """The agent (``GlimpsePolicy``) or the soft model, in eval mode, on the device."""
    images: GlimpseVectorEnv | ImageSource
    """The split: an unshuffled env (hard runs: the run's MDP) or an image source (soft)."""
    config: Any
    """The run's config (``HardTrainConfig`` or ``SoftTrainConfig``)."""
    kind: Literal["hard", "soft"]
    """Which kind of run."""
    boxes: Tensor | None
    """``(N, [L,] 4)`` the digits' boxes of the split's images, if the dataset records them."""
    clutter_boxes: Tensor | None
    """``(N, K, 4)`` the clutter patches' boxes (cluttered datasets)."""

    def __len__(self) -> int:
        return len(_source(self.images))


def _boxes(ds: Any, n: int) -> tuple[Tensor | None, Tensor | None]:
    return tuple(  # type: ignore[return-value]
        None if getattr(ds, key, None) is None else torch.as_tensor(getattr(ds, key))[:n].float()
        for key in ("boxes", "clutter_boxes")
    )


def open_run(
    run_dir: str | os.PathLike[str],
    split: str = "test",
    checkpoint: str = "best",
    device: torch.device | str = "cpu",
    batch_size: int = 500,
    limit: int = 0,
) -> OpenRun:
    """The model of a run folder (``<checkpoint>.pt``, loaded with ``weights_only=True``)
    and its ``split`` (hard runs: the images the run evaluated, i.e. the first
    ``eval_limit``; generated soft datasets: only the first ``limit`` generated when
    ``limit`` is set), with the split's recorded boxes."""
    run_dir = Path(run_dir)
    config = run_dir / "config.json"
    if config.is_file() and "module" in read_json(config):  # a soft run
        cfg = load_run_config(run_dir, SoftTrainConfig)
        ckpt = run_dir / f"{checkpoint}.pt"
        if not ckpt.is_file():
            raise ValueError(f"no checkpoint {ckpt} (expected best.pt or last.pt in the run)")
        task = get_task(cfg.dataset)
        lim = {"limit": limit} if limit and task.generated else {}
        ds = task.load(split, cfg.data_root, val_size=cfg.val_size, **lim)
        src = ImageSource.from_any(ds, device=device)
        model = build_model(cfg, src.image_shape, len(ds.classes)).to(device)
        model.load_state_dict(load_checkpoint(ckpt, device)["model"])
        model.eval()
        return OpenRun(model, src, cfg, "soft", *_boxes(ds, len(src)))
    policy, cfg, venv = load_agent(run_dir, device, checkpoint, split, num_envs=batch_size)
    ds = get_dataset(cfg.task, split, cfg.data_root, val_size=cfg.val_size)
    return OpenRun(policy, venv, cfg, "hard", *_boxes(ds, len(venv.source)))


def where(
    model: Any,
    images: Any,
    *,
    indices: Tensor | None = None,
    mdp: MDPConfig | None = None,
    batch_size: int = 256,
    gradcam: bool = True,
    gradcam_layer: nn.Module | None = None,
    sb3_grid: int | None = None,
    checkpoint: str = "best",
    device: torch.device | str = "cpu",
) -> Where:
    """Where ``model`` looks at ``images`` (module docstring): a :class:`Where`.

    Args:
        model: a hard agent (``GlimpsePolicy``: RAM, DRAM; ``PartsNet``; an SB3 model), a
            soft model (an ``nn.Module`` classifier, e.g. ``SmallCNN``), or a run folder.
        images: ``(B, C, H, W)`` images (float in ``[0, 1]`` or uint8), an
            :class:`ImageSource`, a :class:`GlimpseVectorEnv` (hard agents: its source and
            MDP), or with a run folder as ``model`` a split name (``"val"``, ``"test"``).
        indices: only these images of ``images`` (default: all), in this order.
        mdp: the env's settings for a hard agent given images (not an env).
        batch_size: images per forward (soft) or episodes per env (hard, built here).
        gradcam: soft models: compute Grad-CAM too.
        gradcam_layer: Grad-CAM's layer (default: the last feature stage).
        sb3_grid: SB3 agents: the run's action grid.
        checkpoint, device: for a run folder: which checkpoint, and where to run it.

    Maps are computed in the images' device; the model's training mode is restored.
    """
    if isinstance(model, str | os.PathLike):
        if not isinstance(images, str):
            raise ValueError(f"with a run folder, images must be a split name, got {images!r}")
        run = open_run(model, images, checkpoint, device, batch_size)
        model, images = run.model, run.images
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if _is_hard(model):
        return _where_hard(model, images, indices, mdp, batch_size, sb3_grid)
    if isinstance(model, nn.Module):
        if isinstance(images, GlimpseVectorEnv):
            raise ValueError("a soft model reads whole images: pass the env's source")
        return _where_soft(model, images, indices, batch_size, gradcam, gradcam_layer)
    raise ValueError(
        f"where() knows hard agents (GlimpsePolicy, PartsNet, SB3 models) and soft models "
        f"(nn.Module classifiers), got {type(model).__name__}"
    )
