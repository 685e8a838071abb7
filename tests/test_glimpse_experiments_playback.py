"""TensorBoard glimpse playback: the event files a small RAM run writes, read back with
TensorBoard's own reader, and the GIF/MP4 export from its checkpoint
(glimpse.experiments.playback, agents.playback)."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from agents.playback import render_episodes
from glimpse.experiments.playback import (
    PlaybackConfig,
    export_episodes,
    load_agent,
    load_hard_config,
    playback,
    save_mp4,
    tensorboard_command,
)
from glimpse.viz import DEFAULT_COLORS, TENSORBOARD_IMAGE_WIDTH, render_batch, tensorboard_ncols
from tests.helpers.playback import CELL, FRAME_SHAPE, NCOLS, PLAYBACK, ROWS, STEPS, make_small_run

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> Path:
    return make_small_run(tmp_path_factory.mktemp("runs"), data_root)


def _images(run_dir: Path) -> dict[str, list]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"images": 0})
    acc.Reload()
    return {tag: acc.Images(tag) for tag in acc.Tags()["images"]}


def _count(frame: np.ndarray, color: tuple[int, int, int]) -> int:
    return int((frame == np.array(color, np.uint8)).all(-1).sum())


def test_event_files_hold_the_trajectory_frames(small_run: Path) -> None:
    images = _images(small_run)
    video_tag = "eval/trajectories/video"
    step_tags = [t for t in images if t.startswith("eval/trajectories/steps/")]
    assert video_tag in images and len(step_tags) == 1
    # one evaluation: one animation at the global step (episodes seen), T per-step frames
    (video,) = images[video_tag]
    assert video.step == 2 * 16 and step_tags[0].endswith(f"{2 * 16:09d}")
    steps = images[step_tags[0]]
    assert [e.step for e in steps] == list(range(STEPS))
    frames = np.stack([np.array(Image.open(io.BytesIO(e.encoded_image_string))) for e in steps])
    assert frames.shape == (STEPS, *FRAME_SHAPE)
    gif = Image.open(io.BytesIO(video.encoded_image_string))
    assert gif.format == "GIF" and gif.n_frames == STEPS
    assert (gif.width, gif.height) == (FRAME_SHAPE[1], FRAME_SHAPE[0])
    gif.seek(STEPS - 1)
    assert np.array_equal(np.array(gif.convert("RGB")), frames[-1])

    # The logged frames are exactly a replay of the (only) checkpoint on those images.
    policy, _, venv = load_agent(small_run, split="val", num_envs=PLAYBACK, checkpoint="last")
    replay = render_episodes(policy, venv, range(PLAYBACK), ncols=NCOLS)
    np.testing.assert_array_equal(replay, frames)
    # legible: tiled so that TensorBoard (350 px cards) shows every frame at full size
    assert NCOLS == tensorboard_ncols(28, 28) and FRAME_SHAPE[1] <= TENSORBOARD_IMAGE_WIDTH

    # Labels are drawn: the caption (bottom strip of each row of episodes) of every frame
    # holds the text colour ("y=<label>"), the last frame's the green/red
    # "y=<label> p=<prediction>".
    bottoms = [(r + 1) * (CELL + 2) + 2 for r in range(ROWS)]
    caption = np.concatenate([frames[:, b - 20 : b] for b in bottoms], axis=2)
    right, wrong = DEFAULT_COLORS["correct"], DEFAULT_COLORS["wrong"]
    assert all(_count(f, DEFAULT_COLORS["text"]) > 20 for f in caption[:-1])
    assert _count(caption[-1], right) + _count(caption[-1], wrong) > 20 * PLAYBACK
    assert all(_count(f, right) + _count(f, wrong) == 0 for f in caption[:-1])
    # ... and the check can fail: the same episodes rendered without labels have none.
    ro_images = venv.episodes(PLAYBACK).images
    bare = render_batch(ro_images, np.zeros((PLAYBACK, STEPS, 2)), 8, 1)
    assert _count(bare[-1, -20:], right) + _count(bare[-1, -20:], wrong) == 0
    assert _count(bare[0, -20:], DEFAULT_COLORS["text"]) == 0


def test_export_gif(small_run: Path, tmp_path: Path) -> None:
    out = export_episodes(small_run, tmp_path / "sub" / "ep.gif", indices=(0, 3), fps=4)
    gif = Image.open(out)
    assert gif.n_frames == STEPS and gif.size == (2 * (CELL + 2) + 2, CELL + 4)
    assert gif.info["duration"] == 250
    policy, _, venv = load_agent(small_run, num_envs=2)
    frames = render_episodes(policy, venv, [0, 3])
    gif.seek(STEPS - 1)
    np.testing.assert_array_equal(np.array(gif.convert("RGB")), frames[-1])
    assert not list(out.parent.glob(".*tmp*"))  # atomic: no temporary left behind


def test_export_with_upscale_and_footprint(small_run: Path, tmp_path: Path) -> None:
    policy, _, venv = load_agent(small_run, num_envs=1)
    plain = render_episodes(policy, venv, [0], upscale=8)
    tinted = render_episodes(policy, venv, [0], upscale=8, footprint=True)
    assert plain.shape == tinted.shape and plain.shape[1] == 28 * 8 + 4  # pad 2 each side
    assert (tinted != plain).any()
    out = export_episodes(small_run, tmp_path / "fp.gif", indices=(0,), upscale=8, footprint=True)
    gif = Image.open(out)
    gif.seek(STEPS - 1)
    np.testing.assert_array_equal(np.array(gif.convert("RGB")), tinted[-1])


def test_export_mp4(small_run: Path, tmp_path: Path) -> None:
    imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")
    out = export_episodes(small_run, tmp_path / "ep.mp4", indices=(1,))
    reader = imageio_ffmpeg.read_frames(str(out))
    meta = next(reader)
    assert tuple(meta["size"]) == (CELL + 4, CELL + 4)
    assert sum(1 for _ in reader) == STEPS


def test_mp4_without_encoder_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)
    with pytest.raises(RuntimeError, match="pip install imageio-ffmpeg"):
        save_mp4(np.zeros((2, 4, 4, 3), np.uint8), tmp_path / "x.mp4")
    assert not (tmp_path / "x.mp4").exists()


def test_bad_inputs(small_run: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\.gif or \.mp4"):
        export_episodes(small_run, tmp_path / "x.avi")
    with pytest.raises(ValueError, match="does not exist"):
        load_hard_config(tmp_path / "nope")
    soft = tmp_path / "soft"
    soft.mkdir()
    (soft / "config.json").write_text('{"module": "se", "dataset": "mnist"}')
    with pytest.raises(ValueError, match="not a hard-attention run"):
        load_hard_config(soft)
    policy, _, venv = load_agent(small_run, num_envs=2)
    with pytest.raises(ValueError, match="indices must lie in"):
        render_episodes(policy, venv, [0, 10_000])
    with pytest.raises(ValueError, match="episode indices"):
        render_episodes(policy, venv, [0, 1, 2])
    with pytest.raises(ValueError, match="no checkpoint"):
        load_agent(small_run, checkpoint="nope")
    with pytest.raises(ValueError, match="empty"):
        export_episodes(small_run, tmp_path / "x.gif", indices=())


def test_tensorboard_command_and_script(small_run: Path, tmp_path: Path, capsys) -> None:
    cmd = tensorboard_command(small_run, port=6007)
    assert cmd[cmd.index("--logdir") + 1] == str(small_run)
    assert cmd[cmd.index("--port") + 1] == "6007"
    assert cmd[cmd.index("--samples_per_plugin") + 1] == "images=100"

    from scripts.playback import main

    main([str(small_run), "--export", str(tmp_path / "a.gif"), "--indices", "2"])
    out = capsys.readouterr().out
    assert "--logdir" in out and str(small_run) in out and "a.gif" in out
    assert Image.open(tmp_path / "a.gif").n_frames == STEPS
    assert playback(PlaybackConfig(run_dir=str(small_run))) is None


def test_render_episodes_is_deterministic(small_run: Path) -> None:
    policy, _, venv = load_agent(small_run, num_envs=3)
    a = render_episodes(policy, venv, torch.tensor([5, 6, 7]))
    b = render_episodes(policy, venv, [5, 6, 7])
    np.testing.assert_array_equal(a, b)
