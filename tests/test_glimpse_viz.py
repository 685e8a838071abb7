"""Tests for glimpse.viz: trajectory frames, tiling, GIFs and TensorBoard playback."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from glimpse.retina import pixel_to_loc
from glimpse.viz import (
    DEFAULT_COLORS,
    TENSORBOARD_IMAGE_WIDTH,
    box_colors,
    default_upscale,
    frames_to_video_tensor,
    log_trajectories,
    render_batch,
    render_fixations,
    render_trajectory,
    save_gif,
    tensorboard_ncols,
    tile_frames,
)

BOX = DEFAULT_COLORS["box"]
PATH = DEFAULT_COLORS["path"]
DOT = DEFAULT_COLORS["dot"]


def loc_at(px: float, py: float, h: int = 28, w: int = 28) -> torch.Tensor:
    """Location (1, 2) whose pixel centre is (px, py)."""
    return pixel_to_loc(torch.tensor([[px, py]], dtype=torch.float64), h, w)


def color_mask(frame: np.ndarray, color: tuple[int, int, int]) -> np.ndarray:
    return np.all(frame == np.array(color, dtype=np.uint8), axis=-1)


def outline_mask(
    shape: tuple[int, int], c0: int, r0: int, c1: int, r1: int, lw: int = 1
) -> np.ndarray:
    """Expected outline: the lw outermost pixels inside [c0, c1) x [r0, r1), clipped."""
    h, w = shape
    rows, cols = np.mgrid[-64 : h + 64, -64 : w + 64]
    inside = (cols >= c0) & (cols < c1) & (rows >= r0) & (rows < r1)
    inner = (cols >= c0 + lw) & (cols < c1 - lw) & (rows >= r0 + lw) & (rows < r1 - lw)
    return (inside & ~inner)[64 : 64 + h, 64 : 64 + w]


def plain(image, locations, g, k=1, s=2.0, **kw):
    """Frames with only the boxes drawn (no path, no text)."""
    return render_trajectory(image, locations, g, k, s, show_path=False, show_step=False, **kw)


# --------------------------------------------------------------------------- shapes


@pytest.mark.parametrize(("h", "w"), [(28, 28), (20, 36), (60, 40)])
def test_frame_count_and_shape(h: int, w: int) -> None:
    locs = torch.tensor([[-0.5, -0.5], [0.0, 0.3], [0.6, 0.1], [0.2, -0.9]])
    frames = render_trajectory(torch.rand(1, h, w), locs, 6, 2, upscale=3, label=1, prediction=1)
    assert frames.shape == (4, h * 3, w * 3, 3)
    assert frames.dtype == np.uint8


def test_default_upscale() -> None:
    assert default_upscale(28, 28) == 4
    assert default_upscale(60, 60) == 2
    assert default_upscale(28, 100) == 4
    assert default_upscale(224, 300) == 1
    assert default_upscale(1, 1) == 112
    frames = render_trajectory(np.zeros((28, 40), np.float32), [[0.0, 0.0]], 8)
    assert frames.shape == (1, 112, 160, 3)


# --------------------------------------------------------------------------- boxes


def test_box_edges_exact_pixels() -> None:
    """Retina box x in [10, 18], y in [4, 12] at upscale 4 -> columns 40..71, rows 16..47."""
    img = torch.zeros(1, 28, 28)
    frames = plain(img, loc_at(14, 8), 8, upscale=4)
    mask = color_mask(frames[0], BOX)
    assert mask[16, 40:72].all() and mask[47, 40:72].all()  # top and bottom edges
    assert mask[16:48, 40].all() and mask[16:48, 71].all()  # left and right edges
    np.testing.assert_array_equal(mask, outline_mask((112, 112), 40, 16, 72, 48))


def test_box_edges_with_path_and_text_not_in_interior() -> None:
    img = torch.zeros(1, 28, 28)
    frames = render_trajectory(img, loc_at(14, 14), 8, upscale=4)
    mask = color_mask(frames[0], BOX)
    assert mask[40, 40:72].all() and mask[71, 40:72].all()
    assert mask[40:72, 40].all() and mask[40:72, 71].all()
    assert not mask[42:70, 42:70].any()  # interior (holds only the fixation dot)
    assert mask.sum() == outline_mask((112, 112), 40, 40, 72, 72).sum()


def test_line_width_grows_inwards() -> None:
    frames = plain(torch.zeros(28, 28), loc_at(14, 14), 8, upscale=4, line_width=2)
    np.testing.assert_array_equal(
        color_mask(frames[0], BOX), outline_mask((112, 112), 40, 40, 72, 72, lw=2)
    )


def test_subpixel_box_rounds_to_nearest_canvas_edge() -> None:
    # Centre 14.3 -> box [10.3, 18.3] -> canvas [41.2, 73.2] -> columns 41..72.
    frames = plain(torch.zeros(28, 28), loc_at(14.3, 14), 8, upscale=4)
    np.testing.assert_array_equal(
        color_mask(frames[0], BOX), outline_mask((112, 112), 41, 40, 73, 72)
    )


def test_k_scales_give_k_boxes() -> None:
    # g=4, s=2 at pixel (14, 14): boxes [12, 16], [10, 18], [6, 22] -> x4 on the canvas.
    frames = plain(torch.zeros(28, 28), loc_at(14, 14), 4, 3, 2.0, upscale=4)
    colours = {tuple(c) for c in frames[0].reshape(-1, 3)} - {(0, 0, 0)}
    assert len(colours) == 3
    per_scale = box_colors(3)
    assert per_scale[0] == BOX and len(set(per_scale)) == 3
    for colour, (lo, hi) in zip(per_scale, [(12, 16), (10, 18), (6, 22)], strict=True):
        expected = outline_mask((112, 112), 4 * lo, 4 * lo, 4 * hi, 4 * hi)
        np.testing.assert_array_equal(color_mask(frames[0], colour), expected)


def test_explicit_scale_colours() -> None:
    cols = [(10, 20, 30), (40, 50, 60)]
    assert box_colors(2, {"boxes": cols}) == cols
    assert box_colors(1, {"box": (1, 2, 3)}) == [(1, 2, 3)]
    frames = plain(torch.zeros(28, 28), loc_at(14, 14), 4, 2, upscale=2, colors={"boxes": cols})
    assert color_mask(frames[0], cols[0]).any() and color_mask(frames[0], cols[1]).any()
    assert not color_mask(frames[0], BOX).any()


def test_boxes_only_for_current_fixation() -> None:
    locs = torch.cat([loc_at(6, 6), loc_at(20, 20)])
    frames = plain(torch.zeros(28, 28), locs, 4, upscale=4)
    np.testing.assert_array_equal(
        color_mask(frames[0], BOX), outline_mask((112, 112), 16, 16, 32, 32)
    )
    np.testing.assert_array_equal(
        color_mask(frames[1], BOX), outline_mask((112, 112), 72, 72, 88, 88)
    )


def test_boxes_clipped_at_the_border() -> None:
    # Box [24, 32] on a 28-pixel image: only the top and left edges are visible.
    frames = plain(torch.zeros(28, 28), loc_at(28, 28), 8, upscale=4)
    mask = color_mask(frames[0], BOX)
    np.testing.assert_array_equal(mask, outline_mask((112, 112), 96, 96, 128, 128))
    assert mask[96, 96:].all() and mask[96:, 96].all()
    assert not mask[97:, 97:].any()


def test_boxes_outside_or_larger_than_the_image_do_not_fail() -> None:
    locs = torch.tensor([[5.0, -7.0], [1.0, 1.0], [0.0, 0.0]])
    frames = plain(torch.zeros(1, 20, 30), locs, 16, 3, 2.0, upscale=2)
    assert frames.shape == (3, 40, 60, 3)
    assert not color_mask(frames[0], BOX).any()  # wholly outside: no mark
    # At the centre, scale 0 is [7, 23] x [2, 18]; scales 1 (32 px) and 2 (64 px) cover
    # the whole 20x30 image, so none of their edges is visible.
    per_scale = box_colors(3)
    expected = outline_mask((40, 60), 14, 4, 46, 36)
    np.testing.assert_array_equal(color_mask(frames[2], per_scale[0]), expected)
    assert not color_mask(frames[2], per_scale[1]).any()
    assert not color_mask(frames[2], per_scale[2]).any()


@settings(max_examples=40, deadline=None)
@given(
    cx=st.integers(-10, 40),
    cy=st.integers(-10, 30),
    half=st.integers(1, 8),
    up=st.integers(1, 4),
)
def test_box_matches_retina_geometry(cx: int, cy: int, half: int, up: int) -> None:
    h, w = 20, 28
    frames = plain(np.zeros((h, w), np.uint8), loc_at(cx, cy, h, w), 2 * half, upscale=up)
    c0, c1 = up * (cx - half), up * (cx + half)
    r0, r1 = up * (cy - half), up * (cy + half)
    expected = outline_mask((h * up, w * up), c0, r0, c1, r1)
    np.testing.assert_array_equal(color_mask(frames[0], BOX), expected)


# --------------------------------------------------------------------------- path, text


def test_path_appears_between_fixations_after_frame_zero() -> None:
    locs = torch.cat([loc_at(4, 4), loc_at(24, 24), loc_at(4, 24)])
    frames = render_trajectory(torch.zeros(28, 28), locs, 4, upscale=4, show_step=False)
    assert not color_mask(frames[0], PATH).any()
    assert color_mask(frames[0], DOT).any()
    mid = color_mask(frames[1], PATH)[52:60, 52:60]  # around canvas (56, 56)
    assert mid.any()
    # Frame 2 also draws the second segment (between (24, 24) and (4, 24)).
    assert color_mask(frames[2], PATH)[92:100, 52:60].any()
    assert not color_mask(frames[1], PATH)[92:100, 52:60].any()
    no_path = render_trajectory(
        torch.zeros(28, 28), locs, 4, upscale=4, show_step=False, show_path=False
    )
    assert not color_mask(no_path[2], PATH).any() and not color_mask(no_path[2], DOT).any()


def test_step_number_drawn_top_left() -> None:
    frames = render_trajectory(torch.zeros(28, 28), torch.zeros(3, 2), 4, upscale=4)
    text = color_mask(frames[1], DEFAULT_COLORS["text"])
    assert text[:20, :40].any() and not text[20:].any()
    assert not (frames[0] == frames[1]).all()  # "t=0" vs "t=1"
    hidden = render_trajectory(torch.zeros(28, 28), torch.zeros(3, 2), 4, show_step=False)
    assert not color_mask(hidden[1], DEFAULT_COLORS["text"]).any()


def test_caption_on_last_frame_coloured_by_correctness() -> None:
    img, locs = torch.zeros(28, 28), torch.zeros(3, 2)
    good = render_trajectory(img, locs, 4, upscale=4, label=7, prediction=torch.tensor(7))
    bad = render_trajectory(img, locs, 4, upscale=4, label=7, prediction=3)
    ok, wrong = DEFAULT_COLORS["correct"], DEFAULT_COLORS["wrong"]
    assert color_mask(good[-1], ok)[-20:].any() and not color_mask(good[-1], wrong).any()
    assert color_mask(bad[-1], wrong)[-20:].any() and not color_mask(bad[-1], ok).any()
    for t in range(2):  # earlier frames show the label only, in the text colour
        assert not color_mask(good[t], ok).any() and not color_mask(bad[t], wrong).any()
        assert color_mask(good[t], DEFAULT_COLORS["text"])[-20:].any()


def test_per_step_predictions_shown_on_every_frame() -> None:
    frames = render_trajectory(
        torch.zeros(28, 28), torch.zeros(3, 2), 4, upscale=4, label=1, prediction=[0, 1, 1]
    )
    assert color_mask(frames[0], DEFAULT_COLORS["wrong"]).any()
    assert color_mask(frames[1], DEFAULT_COLORS["correct"]).any()
    with pytest.raises(ValueError, match="one entry per step"):
        render_trajectory(torch.zeros(28, 28), torch.zeros(3, 2), 4, prediction=[0, 1])


# --------------------------------------------------------------------------- image handling


def test_grayscale_to_rgb_keeps_values() -> None:
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, size=(20, 28), dtype=np.uint8)
    far = [[9.0, 9.0]]  # box and path outside the canvas
    expected = np.repeat(np.repeat(gray, 2, 0), 2, 1)[..., None].repeat(3, -1)
    for image in (gray, gray[None], torch.from_numpy(gray), torch.from_numpy(gray) / 255.0):
        frames = plain(image, far, 4, upscale=2)
        np.testing.assert_array_equal(frames[0], expected)
    rgb = rng.random((3, 5, 7)).astype(np.float32)
    frames = plain(rgb, far, 2, upscale=1)
    np.testing.assert_array_equal(
        frames[0], np.round(rgb * 255).astype(np.uint8).transpose(1, 2, 0)
    )


def test_float_images_are_clipped() -> None:
    img = np.array([[-0.5, 2.0]], dtype=np.float32)
    frames = plain(img, [[9.0, 9.0]], 1, upscale=1)
    np.testing.assert_array_equal(frames[0, 0, :, 0], [0, 255])


# --------------------------------------------------------------------------- tiling


def test_render_batch_grid() -> None:
    images = torch.rand(3, 1, 28, 20)  # short side 20 -> default upscale 6 -> 168 x 120
    locs = torch.rand(3, 4, 2) * 2 - 1
    preds = torch.tensor([1, 0, 3])
    out = render_batch(images, locs, 6, 2, labels=[1, 2, 3], predictions=preds, ncols=2)
    assert out.shape == (4, 2 * (168 + 2) + 2, 2 * (120 + 2) + 2, 3) and out.dtype == np.uint8
    one = render_trajectory(images[1], locs[1], 6, 2, label=2, prediction=0)
    np.testing.assert_array_equal(out[:, 2:170, 124:244], one)
    assert (out[:, 172:, 124:] == 255).all()  # the empty fourth cell is padding
    side = render_batch(images, locs, 6, pad=0)  # default: one row of up to 8
    assert side.shape == (4, 168, 360, 3)


def test_render_batch_ragged_episodes_hold_last_frame() -> None:
    images = [torch.rand(28, 28), torch.rand(1, 28, 28)]
    locs = [torch.zeros(2, 2), torch.zeros(5, 2)]
    out = render_batch(images, locs, 4, pad=0)
    assert out.shape == (5, 112, 224, 3)
    np.testing.assert_array_equal(out[1, :, :112], out[4, :, :112])
    with pytest.raises(ValueError, match="same number"):
        render_batch(images, locs[:1], 4)
    with pytest.raises(ValueError, match="labels"):
        render_batch(images, locs, 4, labels=[1])


def test_tile_frames_layout_and_padding() -> None:
    a = np.full((2, 3, 4, 3), 10, np.uint8)
    b = np.full((1, 2, 2, 3), 20, np.uint8)
    out = tile_frames([a, b, a], ncols=2, pad=1, pad_value=7)
    assert out.shape == (2, 2 * (3 + 1) + 1, 2 * (4 + 1) + 1, 3)
    assert (out[:, 1:4, 1:5] == 10).all()
    assert (out[:, 1:3, 6:8] == 20).all()  # b holds its only frame at t=1
    assert (out[:, 3, 6:8] == 7).all()  # b's cell is padded below it
    assert (out[:, 5:8, 1:5] == 10).all()
    assert (out[:, 0] == 7).all()
    stacked = tile_frames(np.stack([a, a]), pad=0)
    assert stacked.shape == (2, 3, 8, 3)
    with pytest.raises(ValueError, match="at least one"):
        tile_frames([])


# --------------------------------------------------------------------------- GIF, video


def _gif_frames(data: bytes | str | os.PathLike) -> list[np.ndarray]:
    src = io.BytesIO(data) if isinstance(data, bytes) else data
    with Image.open(src) as im:
        out = []
        for i in range(im.n_frames):
            im.seek(i)
            out.append(np.asarray(im.convert("RGB")))
        return out


def test_save_gif_round_trip_and_atomic(tmp_path) -> None:
    frames = render_trajectory(torch.rand(28, 36), torch.rand(5, 2) * 2 - 1, 8, 2)
    path = save_gif(frames, tmp_path / "sub" / "dir" / "traj.gif", fps=4)
    assert path == tmp_path / "sub" / "dir" / "traj.gif"
    assert os.listdir(path.parent) == ["traj.gif"]  # no temp file left behind
    back = _gif_frames(path)
    assert len(back) == 5 and back[0].shape == (112, 144, 3)
    with Image.open(path) as im:
        assert im.info["duration"] == 250 and im.info["loop"] == 0
    save_gif(frames[:2], path)  # overwriting in place works
    assert len(_gif_frames(path)) == 2 and os.listdir(path.parent) == ["traj.gif"]


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((3, 8, 8, 3), np.float32),
        np.zeros((8, 8, 3), np.uint8),
        np.zeros((3, 8, 8, 4), np.uint8),
        np.zeros((0, 8, 8, 3), np.uint8),
    ],
)
def test_save_gif_rejects_bad_frames(tmp_path, bad: np.ndarray) -> None:
    with pytest.raises(ValueError, match=r"\(T, H, W, 3\).*shape"):
        save_gif(bad, tmp_path / "x.gif")
    with pytest.raises(ValueError, match="frames"):
        frames_to_video_tensor(bad)
    assert not (tmp_path / "x.gif").exists()


def test_save_gif_rejects_bad_fps(tmp_path) -> None:
    with pytest.raises(ValueError, match="fps"):
        save_gif(np.zeros((2, 4, 4, 3), np.uint8), tmp_path / "x.gif", fps=0)
    assert os.listdir(tmp_path) == []


def test_frames_to_video_tensor_layout() -> None:
    frames = np.random.default_rng(0).integers(0, 256, (4, 5, 6, 3), dtype=np.uint8)
    vid = frames_to_video_tensor(frames)
    assert vid.shape == (1, 4, 3, 5, 6) and vid.dtype == torch.uint8
    assert torch.equal(vid[0, 2, 1], torch.from_numpy(frames[2, :, :, 1]))


# --------------------------------------------------------------------------- TensorBoard


def test_log_trajectories_tensorboard_round_trip(tmp_path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torch.utils.tensorboard import SummaryWriter

    images = torch.rand(2, 1, 28, 28)
    locs = torch.rand(2, 6, 2) * 2 - 1
    frames = render_batch(images, locs, 8, 2, labels=[3, 4], predictions=[3, 1])
    writer = SummaryWriter(log_dir=str(tmp_path))
    writer.add_scalar("eval/accuracy", 0.5, 1000)
    log_trajectories(writer, "eval/trajectories", frames, global_step=1000, fps=3)
    log_trajectories(writer, "eval/trajectories", [f for f in frames[None]], global_step=2000)
    writer.close()

    acc = EventAccumulator(str(tmp_path), size_guidance={"images": 0})
    acc.Reload()
    tags = set(acc.Tags()["images"])
    assert tags == {
        "eval/trajectories/video",
        "eval/trajectories/steps/000001000",
        "eval/trajectories/steps/000002000",
    }
    steps = acc.Images("eval/trajectories/steps/000001000")
    assert [e.step for e in steps] == list(range(6))
    for t, ev in enumerate(steps):
        decoded = np.asarray(Image.open(io.BytesIO(ev.encoded_image_string)).convert("RGB"))
        assert decoded.shape == frames.shape[1:]
        np.testing.assert_array_equal(decoded, frames[t])  # PNG is lossless
    videos = acc.Images("eval/trajectories/video")
    assert [e.step for e in videos] == [1000, 2000]
    gif = videos[0].encoded_image_string
    assert gif[:6] in (b"GIF87a", b"GIF89a")
    decoded = _gif_frames(gif)
    assert len(decoded) == 6 and decoded[0].shape == frames.shape[1:]
    assert (videos[0].width, videos[0].height) == (frames.shape[2], frames.shape[1])


def test_log_trajectories_video_only_and_bad_args(tmp_path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torch.utils.tensorboard import SummaryWriter

    frames = render_trajectory(torch.rand(28, 28), torch.zeros(3, 2), 8)
    writer = SummaryWriter(log_dir=str(tmp_path))
    log_trajectories(writer, "train/traj/", frames, global_step=0, per_step=False)
    for kwargs, match in [
        ({"tag": "", "global_step": 0}, "tag"),
        ({"tag": "x", "global_step": -1}, "global_step"),
        ({"tag": "x", "global_step": 1.5}, "global_step"),
    ]:
        with pytest.raises(ValueError, match=match):
            log_trajectories(writer, frames=frames, **kwargs)
    with pytest.raises(ValueError, match="frames"):
        log_trajectories(writer, "x", frames.astype(np.float32), 0)
    writer.close()
    acc = EventAccumulator(str(tmp_path), size_guidance={"images": 0})
    acc.Reload()
    assert acc.Tags()["images"] == ["train/traj/video"]


# --------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(
    ("image", "match"),
    [
        (np.zeros((4, 28, 28)), r"\(C, H, W\).*\(4, 28, 28\)"),
        (np.zeros((28, 28, 3)), r"\(28, 28, 3\)"),
        (np.zeros((1, 1, 28, 28)), r"\(1, 1, 28, 28\)"),
        (np.zeros(28), r"\(28,\)"),
        (np.zeros((1, 0, 5)), r"\(1, 0, 5\)"),
        (np.zeros((28, 28), np.int32), "int32"),
        (np.full((28, 28), np.nan), "non-finite"),
    ],
)
def test_bad_images_raise(image: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        render_trajectory(image, [[0.0, 0.0]], 8)


@pytest.mark.parametrize(
    ("locs", "match"),
    [
        (np.zeros((3, 3)), r"\(T, 2\).*\(3, 3\)"),
        (np.zeros(2), r"\(T, 2\).*\(2,\)"),
        (np.zeros((1, 3, 2)), r"\(T, 2\)"),
        (np.zeros((0, 2)), "T = 0"),
        (np.array([[0.0, 0.0], [np.nan, 0.1]]), r"finite.*step 1.*nan"),
        (torch.tensor([[0.0, float("inf")]]), r"finite.*step 0.*inf"),
    ],
)
def test_bad_locations_raise(locs, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        render_trajectory(np.zeros((28, 28)), locs, 8)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"upscale": 0}, "upscale"),
        ({"upscale": 2.5}, "upscale"),
        ({"line_width": 0}, "line_width"),
        ({"colors": {"boxx": (1, 2, 3)}}, "unknown colour key 'boxx'.*box"),
        ({"colors": {"path": (1, 2)}}, "path"),
        ({"colors": {"box": (0, 0, 300)}}, "box"),
        ({"colors": {"boxes": [(1, 2, 3)] * 2}}, "one colour per scale"),
        ({"glimpse_size": 0}, "glimpse_size"),
        ({"num_scales": 0}, "num_scales"),
        ({"label": 1, "prediction": np.zeros((2, 2))}, "one entry per step"),
    ],
)
def test_bad_options_raise(kwargs: dict, match: str) -> None:
    kwargs = {"glimpse_size": 8, **kwargs}
    with pytest.raises(ValueError, match=match):
        render_trajectory(np.zeros((28, 28)), [[0.0, 0.0]], **kwargs)


def test_footprint_tints_the_glimpsed_pixels_up_to_each_step() -> None:
    locs = torch.cat([loc_at(6, 6), loc_at(20, 20)])  # 4x4 boxes [4, 8)^2 and [18, 22)^2
    kw = {"upscale": 1, "show_path": False, "show_step": False}
    off = render_trajectory(torch.zeros(28, 28), locs, 4, **kw)
    on = render_trajectory(torch.zeros(28, 28), locs, 4, footprint=True, **kw)
    tint = np.array([153, 84, 0], dtype=np.uint8)  # 0.6 * (255, 140, 0) on black, rounded
    inner0, inner1 = (slice(5, 7), slice(5, 7)), (slice(19, 21), slice(19, 21))
    assert np.all(on[0][inner0] == tint) and np.all(on[0][inner1] == 0)
    assert np.all(on[1][inner0] == tint) and np.all(on[1][inner1] == tint)  # equal mass
    changed = np.any(on != off, axis=-1)
    assert not changed[0][10:, :].any() and not changed[:, :4, :].any()  # nothing else
    assert np.array_equal(color_mask(on[1], BOX), color_mask(off[1], BOX))  # outline on top


def test_overlay_map_blends_by_relative_attention() -> None:
    from glimpse.viz import overlay_map

    image = torch.full((1, 4, 4), 100 / 255)
    attn = torch.zeros(4, 4)
    attn[1, 2], attn[3, 0] = 2.0, 1.0
    out = overlay_map(image, attn, upscale=2, color=(200, 0, 0), strength=0.5)
    assert out.shape == (8, 8, 3)
    assert out[2, 4].tolist() == [150, 50, 50]  # alpha 0.5 at the maximum
    assert out[6, 0].tolist() == [125, 75, 75]  # alpha 0.25 at half the maximum
    assert out[0, 0].tolist() == [100, 100, 100]  # no attention: the image
    assert np.array_equal(overlay_map(image, torch.zeros(4, 4), 1)[..., 0], np.full((4, 4), 100))
    with pytest.raises(ValueError, match="non-negative"):
        overlay_map(image, -attn)


# --------------------------------------------------------------- the playback renderer


def test_render_fixations_captions_targets_and_draws_parts_in_turn() -> None:
    """Fed ``(N, L)`` labels and predictions (what the env and an agent report), it captions
    one target as the class and several as ``"3 7"``; ``(N, S, K, 2)`` parts are drawn one
    per frame; the frames are :func:`render_batch`'s."""
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(3, 1, 20, 24, generator=gen)
    fix = torch.rand(3, 2, 2, 2, generator=gen) * 2 - 1  # S = 2 steps of K = 2 parts
    labels, preds = torch.tensor([[3, 7], [1, 1], [0, 2]]), torch.tensor([[3, 7], [1, 2], [5, 5]])
    frames = render_fixations(images, fix, 6, 2, labels=labels, predictions=preds, ncols=2)
    expected = render_batch(
        images,
        fix.reshape(3, 4, 2),
        6,
        2,
        labels=["3 7", "1 1", "0 2"],
        predictions=["3 7", "1 2", "5 5"],
        ncols=2,
    )
    np.testing.assert_array_equal(frames, expected)
    one = render_fixations(images, fix[:, 0], 6, labels=labels[:, :1], predictions=preds[:, 0])
    same = render_batch(images, fix[:, 0], 6, labels=[3, 1, 0], predictions=[3, 1, 5])
    np.testing.assert_array_equal(one, same)
    with pytest.raises(ValueError, match=r"fixations must be \(N, T, 2\)"):
        render_fixations(images, fix[:2, 0], 6)
    with pytest.raises(ValueError, match=r"labels must have shape \(3,\) or \(3, L\)"):
        render_fixations(images, fix[:, 0], 6, labels=labels[:2])


def test_tensorboard_ncols_fits_the_dashboard_card_at_full_size():
    # 28x28 -> 112-pixel frames: 3 * 114 + 2 = 344 <= 350; 60x60 -> 120: 2; 100 -> 200: 1
    assert [tensorboard_ncols(s, s) for s in (28, 60, 100)] == [3, 2, 1]
    assert tensorboard_ncols(28, 28, upscale=1) == (TENSORBOARD_IMAGE_WIDTH - 2) // 30
    assert tensorboard_ncols(28, 500, upscale=2) == 1  # too wide for one: still one
    for s in (28, 60, 100):  # the tiled row of n full-size frames fits the card
        n, cell = tensorboard_ncols(s, s), s * default_upscale(s, s)
        row = tile_frames(np.zeros((n, 1, cell, cell, 3), np.uint8), ncols=n)
        assert row.shape[2] <= TENSORBOARD_IMAGE_WIDTH
