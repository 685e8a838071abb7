"""Watching what a hard-attention agent looks at: TensorBoard, GIF and MP4 playback of a run.

Every trainer logs glimpse trajectories to TensorBoard through one helper
(:func:`agents.playback.log_playback` -> :func:`glimpse.viz.log_trajectories`): per evaluation,
``eval/trajectories/video`` (an animated GIF of the first validation images, tiled) and
``eval/trajectories/steps/<global step>`` (one frame per glimpse step). Each frame carries
the step number and the caption ``y=<true class>``; the last frame adds ``p=<predicted
class>`` in green (right) or red (wrong) (:func:`glimpse.viz.render_trajectory`).

This module is the library side of ``scripts/playback.py``:

- :func:`tensorboard_command` / :func:`launch_tensorboard`: the TensorBoard command line for
  a run folder (with ``--samples_per_plugin images=100`` so every step frame is kept);
- :func:`load_agent`: the agent of a run rebuilt from its ``config.json`` and a checkpoint
  (``best.pt`` by default, loaded with ``weights_only=True``);
- :func:`eval_env`: a deterministic (unshuffled) env over one split of the run's task;
- :func:`export_episodes`: play chosen images' episodes with the agent's mean locations
  (Mnih et al. 2014's test-time policy; :func:`agents.playback.render_episodes`, the frames
  the trainers log) and write them as a GIF or MP4 (MP4 needs the optional
  ``imageio-ffmpeg``: ``pip install -e ".[video]"``).

Top floor (:mod:`glimpse.experiments`): it rebuilds a run's agent, so it imports agents.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar

import numpy as np
import torch
import tyro

from agents.config import HardTrainConfig
from agents.playback import render_episodes
from agents.policies import POLICIES
from envs import GlimpseVectorEnv
from glimpse.data import ImageSource
from glimpse.io import atomic_write, read_json
from glimpse.training import load_checkpoint, load_run_config, resolve_device
from glimpse.viz import save_gif

__all__ = [
    "PlaybackConfig",
    "eval_env",
    "export_episodes",
    "launch_tensorboard",
    "load_agent",
    "load_hard_config",
    "playback",
    "save_mp4",
    "tensorboard_command",
]


def _check_run_dir(run_dir: str | os.PathLike[str], parent_ok: bool = False) -> Path:
    """``run_dir`` as a path, if it is a run folder (it holds ``config.json``), or with
    ``parent_ok`` a folder holding run folders (TensorBoard shows them side by side)."""
    path = Path(run_dir)
    if not path.is_dir():
        raise ValueError(f"run folder {path} does not exist (expected runs/<run_name>/)")
    if (path / "config.json").is_file():
        return path
    if parent_ok and any((sub / "config.json").is_file() for sub in path.iterdir()):
        return path
    what = "is not a run folder (no config.json)"
    if parent_ok:
        what += " and holds no run folders"
    raise ValueError(f"{path} {what}; expected runs/<run_name>/ written by a trainer")


def tensorboard_command(
    logdir: str | os.PathLike[str], port: int = 6006, host: str = "localhost"
) -> list[str]:
    """``tensorboard --logdir LOGDIR --samples_per_plugin images=100 ...`` as an argv list."""
    exe = shutil.which("tensorboard")
    prog = [exe] if exe else [sys.executable, "-m", "tensorboard.main"]
    return [
        *prog,
        "--logdir",
        str(logdir),
        "--samples_per_plugin",
        "images=100",
        "--host",
        host,
        "--port",
        str(port),
    ]


def launch_tensorboard(
    logdir: str | os.PathLike[str], port: int = 6006, host: str = "localhost", **popen_kw: Any
) -> subprocess.Popen:
    """Start TensorBoard on ``logdir`` in the background; the caller stops it (``.terminate()``)."""
    _check_run_dir(logdir, parent_ok=True)
    return subprocess.Popen(tensorboard_command(logdir, port, host), **popen_kw)


def load_hard_config(run_dir: str | os.PathLike[str]):
    """The :class:`agents.train.HardTrainConfig` saved in ``run_dir/config.json``.

    Raises ``ValueError`` when the run is not a hard-attention run of the REINFORCE trainer
    (e.g. a soft-attention run, which has no glimpses to play back).
    """
    path = _check_run_dir(run_dir) / "config.json"
    data = read_json(path)
    if not isinstance(data, dict) or data.get("agent") not in POLICIES:
        raise ValueError(
            f"{run_dir} is not a hard-attention run (config agent={data.get('agent')!r}; "
            f"expected one of {', '.join(POLICIES)}); only glimpse agents can be played back"
        )
    # PPO runs save a HardTrainConfig subclass: its extra fields are not needed here
    return load_run_config(run_dir, HardTrainConfig, ignore_unknown=True)


def eval_env(cfg: Any, split: str, num_envs: int, device: torch.device | str = "cpu"):
    """An unshuffled :class:`envs.GlimpseVectorEnv` of ``num_envs`` episodes over ``split``
    (``"train"``, ``"val"`` or ``"test"``) of the run's task, with the run's MDP settings
    (val and test: the first ``cfg.eval_limit`` images if the run set it, as it evaluated)."""
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
    kw: dict[str, Any] = {"val_size": cfg.val_size}
    source = ImageSource.from_any(cfg.task, split, cfg.data_root, device, kw)
    limit = getattr(cfg, "eval_limit", 0) if split != "train" else 0
    if limit and limit < len(source):  # the run evaluated only its first eval_limit images
        boxes = None if source.boxes is None else source.boxes[:limit]
        source = ImageSource(source.images[:limit], source.labels[:limit], boxes)
    mdp = cfg.mdp(source.num_targets)
    return GlimpseVectorEnv(source, num_envs, mdp, device=device, shuffle=False)


def load_agent(
    run_dir: str | os.PathLike[str],
    device: torch.device | str = "cpu",
    checkpoint: str = "best",
    split: str = "test",
    num_envs: int = 8,
):
    """``(policy, cfg, venv)``: the run's agent with ``<checkpoint>.pt`` loaded (eval mode),
    its config and an env over ``split`` with ``num_envs`` episodes."""
    cfg = load_hard_config(run_dir)
    ckpt = Path(run_dir) / f"{checkpoint}.pt"
    if not ckpt.is_file():
        raise ValueError(f"no checkpoint {ckpt} (expected best.pt or last.pt in the run folder)")
    venv = eval_env(cfg, split, num_envs, device)
    glimpse_shape = venv.single_observation_space["glimpse"].shape
    policy = POLICIES[cfg.agent](cfg, glimpse_shape, venv.config.num_targets).to(device)
    policy.load_state_dict(load_checkpoint(ckpt, device)["model"])
    policy.eval()
    return policy, cfg, venv


def save_mp4(frames: np.ndarray, path: str | os.PathLike[str], fps: float = 2) -> Path:
    """Write ``(T, H, W, 3)`` uint8 frames as an H.264 MP4 (atomically), padding odd sides
    by one white pixel. Needs ``imageio-ffmpeg`` (``pip install -e ".[video]"``)."""
    try:
        import imageio_ffmpeg
    except ImportError:
        raise RuntimeError(
            "MP4 export needs an ffmpeg encoder: pip install imageio-ffmpeg "
            '(or pip install -e ".[video]"); GIF export works without it'
        ) from None
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
    t, h, w, _ = frames.shape
    padded = np.full((t, h + h % 2, w + w % 2, 3), 255, np.uint8)
    padded[:, :h, :w] = frames
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.stem}.{os.getpid()}.tmp.mp4"
    try:
        writer = imageio_ffmpeg.write_frames(
            str(tmp),
            (padded.shape[2], padded.shape[1]),
            fps=fps,
            codec="libx264",
            pix_fmt_out="yuv420p",
            macro_block_size=1,
        )
        writer.send(None)
        for frame in padded:
            writer.send(np.ascontiguousarray(frame))
        writer.close()
        data = tmp.read_bytes()
    finally:
        tmp.unlink(missing_ok=True)
    return atomic_write(path, lambda f: f.write(data))


def export_episodes(
    run_dir: str | os.PathLike[str],
    out: str | os.PathLike[str],
    indices: Sequence[int] = (0, 1, 2, 3),
    split: str = "test",
    checkpoint: str = "best",
    fps: float = 2,
    device: torch.device | str = "cpu",
    **render_kwargs: Any,
) -> Path:
    """Render episodes of a run's agent on ``split`` images ``indices`` to ``out``: a GIF
    (``.gif``) or an MP4 (``.mp4``); ``render_kwargs`` (``upscale``, ``footprint``, ...)
    go to :func:`glimpse.viz.render_fixations`. Returns the written path."""
    if len(indices) == 0:
        raise ValueError("indices is empty; give at least one image index to export")
    suffix = Path(out).suffix.lower()
    if suffix not in (".gif", ".mp4"):
        raise ValueError(f"output must end in .gif or .mp4, got {str(out)!r}")
    policy, _, venv = load_agent(run_dir, device, checkpoint, split, num_envs=len(indices))
    frames = render_episodes(policy, venv, indices, **render_kwargs)
    if suffix == ".gif":
        return save_gif(frames, out, fps=fps)
    return save_mp4(frames, out, fps=fps)


@dataclass
class PlaybackConfig:
    """Play back a hard-attention run: TensorBoard command, or GIF/MP4 export from a checkpoint."""

    run_dir: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="RUN_DIR")]
    """The run folder (runs/<run_name>/, or a parent folder of several runs for TensorBoard)."""
    launch: bool = False
    """Start TensorBoard on run_dir (runs until interrupted)."""
    port: int = 6006
    """TensorBoard port."""
    host: str = "localhost"
    """TensorBoard host (localhost: this machine only)."""
    export: str | None = None
    """Write episodes to this .gif or .mp4 file (MP4 needs imageio-ffmpeg)."""
    indices: tuple[int, ...] = (0, 1, 2, 3)
    """Images of the split to play (one tiled episode each)."""
    split: str = "test"
    """Split of the run's dataset: train, val or test."""
    checkpoint: str = "best"
    """Checkpoint of the run folder: best or last."""
    fps: float = 2.0
    """Frames (glimpse steps) per second."""
    device: str = "cpu"
    """Device of the replay: cpu, cuda[:N] or auto."""
    upscale: int | None = None
    """Integer upscale of each frame (default: short side at least 112 pixels)."""
    footprint: bool = False
    """Tint each frame with the attention map of the fixations so far (glimpse.attention)."""

    RULES: ClassVar[dict[str, tuple]] = {
        "port": ("[]", 1, 65535),
        "indices": (">=", 0),
        "fps": (">", 0),
        "upscale": (">=", 1),
    }
    """Bounds of the numeric fields (:func:`glimpse.training.check_config`)."""


def playback(cfg: PlaybackConfig) -> Path | None:
    """Print the TensorBoard command (run it with ``launch``); export episodes if asked.

    Returns the exported file, if any."""
    _check_run_dir(cfg.run_dir, parent_ok=not cfg.export)
    cmd = tensorboard_command(cfg.run_dir, cfg.port, cfg.host)
    print("TensorBoard: " + " ".join(cmd))
    print(
        f"then open http://{cfg.host}:{cfg.port}/#images and filter tags by "
        "'trajectories' (video: the animation; steps/<global step>: one frame per glimpse)"
    )
    written = None
    if cfg.export:
        written = export_episodes(
            cfg.run_dir,
            cfg.export,
            cfg.indices,
            cfg.split,
            cfg.checkpoint,
            cfg.fps,
            resolve_device(cfg.device),
            upscale=cfg.upscale,
            footprint=cfg.footprint,
        )
        print(f"wrote {written}")
    if cfg.launch:
        proc = launch_tensorboard(cfg.run_dir, cfg.port, cfg.host)
        try:
            proc.wait()
        except KeyboardInterrupt:
            proc.terminate()
            proc.wait()
    return written
