"""Translated / cluttered / multi-digit MNIST: placement, clutter, determinism, caching."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import glimpse.data.paths as paths_module
from glimpse.data import (
    ClutteredMNIST,
    MultiMNIST,
    TranslatedMNIST,
    left_to_right,
    load_mnist,
)


@pytest.fixture(scope="module")
def source(data_root):
    """The official MNIST test split, source of every synthetic ``split="test"`` image."""
    return load_mnist(data_root, "test")


def crops(data: torch.Tensor, boxes: torch.Tensor) -> np.ndarray:
    """The 28×28 crop of each image at its box ``(N, 4)``."""
    x0, y0 = boxes[:, 0].long().numpy(), boxes[:, 1].long().numpy()
    rows = y0[:, None] + np.arange(28)
    cols = x0[:, None] + np.arange(28)
    return data.numpy()[np.arange(len(data))[:, None, None], rows[:, :, None], cols[:, None, :]]


def outside_box(data: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """``data`` with each image's box area zeroed."""
    h, w = data.shape[1:]
    ys, xs = torch.arange(h)[:, None], torch.arange(w)[None, :]
    b = boxes[:, :, None, None]
    inside = (xs >= b[:, 0]) & (xs < b[:, 2]) & (ys >= b[:, 1]) & (ys < b[:, 3])
    return data * ~inside


# -- translated ----------------------------------------------------------------------------


@pytest.mark.parametrize("canvas", [60, (40, 75)])
def test_translated_digit_sits_at_its_box_on_a_blank_canvas(data_root, source, canvas):
    ds = TranslatedMNIST(data_root, "test", canvas=canvas, cache=False)
    h, w = (canvas, canvas) if isinstance(canvas, int) else canvas
    assert ds.data.shape == (10000, h, w) and ds.data.dtype == torch.uint8
    assert ds.boxes.shape == (10000, 4) and ds.boxes.dtype == torch.float32
    assert torch.equal(ds.targets, source.targets)
    b = ds.boxes
    assert torch.equal(b[:, 2] - b[:, 0], torch.full((10000,), 28.0))
    assert torch.equal(b[:, 3] - b[:, 1], torch.full((10000,), 28.0))
    assert b[:, :2].min() >= 0 and b[:, 2].max() <= w and b[:, 3].max() <= h
    np.testing.assert_array_equal(crops(ds.data, b), source.data.numpy())
    assert outside_box(ds.data, b).count_nonzero() == 0
    # positions cover the whole range (uniform over every valid corner)
    assert b[:, 0].min() == 0 and b[:, 0].max() == w - 28
    assert b[:, 1].min() == 0 and b[:, 1].max() == h - 28


def test_getitem_returns_pil_image_and_int_target(data_root):
    ds = TranslatedMNIST(data_root, "test", limit=4)
    img, target = ds[2]
    assert img.size == (60, 60) and img.mode == "L"
    assert target == int(ds.targets[2])
    np.testing.assert_array_equal(np.asarray(img), ds.data[2].numpy())


def test_generation_is_byte_identical_and_seeded_per_split(data_root):
    a = ClutteredMNIST(data_root, "test", cache=False)
    b = ClutteredMNIST(data_root, "test", cache=False)
    assert a.data.numpy().tobytes() == b.data.numpy().tobytes()
    assert torch.equal(a.boxes, b.boxes) and torch.equal(a.targets, b.targets)
    c = ClutteredMNIST(data_root, "test", seed=1, cache=False)
    assert not torch.equal(a.boxes, c.boxes)
    val = ClutteredMNIST(data_root, "val", cache=False, limit=1000)
    assert not torch.equal(a.boxes[:1000], val.boxes)


def test_limit_gives_the_first_images_of_the_full_split(data_root):
    full = ClutteredMNIST(data_root, "test", cache=False)
    head = ClutteredMNIST(data_root, "test", cache=False, limit=37)
    assert len(head) == 37
    assert torch.equal(head.data, full.data[:37]) and torch.equal(head.boxes, full.boxes[:37])


# -- cluttered -----------------------------------------------------------------------------


def test_cluttered_is_translated_plus_clutter(data_root):
    translated = TranslatedMNIST(data_root, "test", cache=False, limit=500)
    cluttered = ClutteredMNIST(data_root, "test", cache=False, limit=500)
    assert torch.equal(cluttered.boxes, translated.boxes)
    assert (cluttered.data >= translated.data).all()  # combined with max
    assert outside_box(cluttered.data, cluttered.boxes).count_nonzero() > 0
    none = ClutteredMNIST(data_root, "test", num_clutter=0, cache=False, limit=500)
    assert torch.equal(none.data, translated.data)


def test_more_clutter_adds_more_pixels(data_root):
    counts = [
        outside_box(d.data, d.boxes).count_nonzero(dim=(1, 2)).float().mean()
        for d in (
            ClutteredMNIST(data_root, "test", num_clutter=k, cache=False, limit=2000)
            for k in (1, 4, 8)
        )
    ]
    assert counts[0] < counts[1] < counts[2]


@pytest.mark.parametrize("size", [4, 8, 13])
def test_each_clutter_patch_fits_in_clutter_size(data_root, size):
    translated = TranslatedMNIST(data_root, "test", canvas=(50, 64), cache=False, limit=1000)
    one = ClutteredMNIST(
        data_root, "test", (50, 64), num_clutter=1, clutter_size=size, cache=False, limit=1000
    )
    changed = one.data != translated.data
    assert changed.any()
    for mask in changed[changed.flatten(1).any(1)]:
        ys, xs = torch.nonzero(mask, as_tuple=True)
        assert ys.max() - ys.min() < size and xs.max() - xs.min() < size


def test_clutter_boxes_account_for_every_pixel_outside_the_digit(data_root):
    """Every non-zero pixel lies in the digit's frame or in a recorded clutter box, and
    every clutter box holds the source patch it was cut from (pasted with max)."""
    ds = ClutteredMNIST(data_root, "test", (50, 64), num_clutter=3, cache=False, limit=300)
    assert ds.clutter_boxes.shape == (300, 3, 4) and ds.clutter_boxes.dtype == torch.float32
    sizes = ds.clutter_boxes[..., 2:] - ds.clutter_boxes[..., :2]
    assert (sizes == 8).all()
    rest = outside_box(ds.data, ds.boxes)
    for j in range(3):
        rest = outside_box(rest, ds.clutter_boxes[:, j])
    assert rest.count_nonzero() == 0
    translated = TranslatedMNIST(data_root, "test", (50, 64), cache=False, limit=300)
    one = ClutteredMNIST(data_root, "test", (50, 64), num_clutter=1, cache=False, limit=300)
    changed = one.data != translated.data
    inside = outside_box(changed.to(torch.uint8), one.clutter_boxes[:, 0]) == 0
    assert inside.all()  # clutter changed pixels only inside its own box
    empty = ClutteredMNIST(data_root, "test", num_clutter=0, cache=False, limit=5)
    assert empty.clutter_boxes.shape == (5, 0, 4)


def test_clutter_boxes_come_back_from_the_cache(data_root):
    first = ClutteredMNIST(data_root, "test", seed=12, limit=50)
    second = ClutteredMNIST(data_root, "test", seed=12, limit=50)
    assert second.from_cache and torch.equal(second.clutter_boxes, first.clutter_boxes)


def test_default_cluttered_matches_the_paper_small_setting(data_root):
    ds = ClutteredMNIST(data_root, "test", limit=3)
    assert (ds.canvas, ds.num_clutter, ds.clutter_size) == ((60, 60), 4, 8)


# -- multi-digit ---------------------------------------------------------------------------


def test_left_to_right_orders_by_centre_x_then_y():
    boxes = np.array(
        [[[50, 0, 78, 28], [0, 40, 28, 68], [0, 10, 28, 38], [20, 0, 48, 28]]], np.float32
    )
    np.testing.assert_array_equal(left_to_right(boxes), [[2, 1, 3, 0]])


def test_multimnist_boxes_are_disjoint_ordered_and_hold_their_digits(data_root, source):
    ds = MultiMNIST(data_root, "test", canvas=(64, 120), num_digits=3, cache=False, limit=300)
    assert ds.data.shape == (300, 64, 120)
    assert ds.targets.shape == (300, 3) and ds.targets.dtype == torch.int64
    assert ds.boxes.shape == (300, 3, 4)
    b = ds.boxes
    assert (b[:, 1:, 0] >= b[:, :-1, 2]).all()  # x-intervals disjoint, left to right
    assert b[..., 0].min() >= 0 and b[..., 2].max() <= 120 and b[..., 3].max() <= 64
    cx = (b[..., 0] + b[..., 2]) / 2
    assert (cx[:, 1:] > cx[:, :-1]).all()
    by_label = {c: source.data[source.targets == c].flatten(1) for c in range(10)}
    for j in range(3):
        patches = torch.from_numpy(crops(ds.data, b[:, j])).flatten(1)
        for patch, label in zip(patches[:40], ds.targets[:40, j].tolist(), strict=True):
            assert (by_label[label] == patch).all(1).any()
    assert outside_box(outside_box(outside_box(ds.data, b[:, 0]), b[:, 1]), b[:, 2]).sum() == 0


def test_multimnist_batches_with_a_dataloader(data_root):
    from torchvision.transforms.functional import pil_to_tensor

    ds = MultiMNIST(data_root, "test", limit=6, transform=pil_to_tensor)
    images, targets = next(iter(DataLoader(ds, batch_size=6)))
    assert images.shape == (6, 1, 100, 100) and targets.shape == (6, 2)
    assert torch.equal(targets, ds.targets)


# -- caching -------------------------------------------------------------------------------


def test_second_construction_reads_the_cache(data_root, monkeypatch):
    first = ClutteredMNIST(data_root, "test", seed=11, limit=200)
    assert not first.from_cache and first.cache_path.is_file()

    def no_generation(*args, **kwargs):
        raise AssertionError("regenerated although cached")

    monkeypatch.setattr(ClutteredMNIST, "_generate", no_generation)
    second = ClutteredMNIST(data_root, "test", seed=11, limit=200)
    assert second.from_cache and second.cache_path == first.cache_path
    assert torch.equal(second.data, first.data) and torch.equal(second.boxes, first.boxes)


def test_cache_key_depends_on_every_parameter(data_root):
    base = ClutteredMNIST(data_root, "test", limit=20)
    for kwargs in (
        {"seed": 1},
        {"num_clutter": 3},
        {"clutter_size": 7},
        {"canvas": (60, 61)},
        {"limit": 21},
    ):
        other = ClutteredMNIST(data_root, "test", **{"limit": 20, **kwargs})
        assert other.cache_path != base.cache_path, kwargs
    assert TranslatedMNIST(data_root, "test", limit=20).cache_path != base.cache_path


def test_no_cache_neither_reads_nor_writes(data_root):
    ds = ClutteredMNIST(data_root, "test", seed=12, limit=10, cache=False)
    assert ds.cache_path is None and not ds.from_cache
    assert not ClutteredMNIST(data_root, "test", seed=12, limit=10).from_cache


def _partial_writer(error: BaseException):
    def save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a zip")
        raise error

    return save


def test_interrupted_cache_write_leaves_no_file(data_root, monkeypatch):
    folder = paths_module.cache_dir() / "synthetic"
    folder.mkdir(parents=True, exist_ok=True)
    before = set(folder.iterdir())
    with monkeypatch.context() as patch, pytest.raises(KeyboardInterrupt):
        patch.setattr(paths_module.torch, "save", _partial_writer(KeyboardInterrupt()))
        ClutteredMNIST(data_root, "test", seed=13, limit=10)
    assert set(folder.iterdir()) == before  # neither the cache file nor a temp file
    first = ClutteredMNIST(data_root, "test", seed=13, limit=10)
    assert not first.from_cache and set(folder.iterdir()) == before | {first.cache_path}
    assert ClutteredMNIST(data_root, "test", seed=13, limit=10).from_cache


def test_failed_cache_write_warns_and_keeps_the_data(data_root, monkeypatch):
    monkeypatch.setattr(paths_module.torch, "save", _partial_writer(OSError("disk full")))
    with pytest.warns(RuntimeWarning, match="disk full"):
        ds = ClutteredMNIST(data_root, "test", seed=14, limit=10)
    assert len(ds) == 10 and not ds.cache_path.exists()
    assert not list(ds.cache_path.parent.glob(".*.tmp"))


@pytest.mark.parametrize("damage", ["garbage", "truncated", "wrong_shape", "not_a_dict"])
def test_corrupt_cache_is_regenerated(data_root, damage):
    good = ClutteredMNIST(data_root, "test", seed=15, limit=30)
    path = good.cache_path
    if damage == "garbage":
        path.write_bytes(b"\x00not a torch file" * 10)
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:500])
    elif damage == "wrong_shape":
        payload = torch.load(path, weights_only=True)
        payload["data"] = payload["data"][:, :59]
        torch.save(payload, path)
    else:
        torch.save([1, 2, 3], path)
    with pytest.warns(RuntimeWarning, match="corrupt cache"):
        again = ClutteredMNIST(data_root, "test", seed=15, limit=30)
    assert not again.from_cache and torch.equal(again.data, good.data)
    assert ClutteredMNIST(data_root, "test", seed=15, limit=30).from_cache


# -- bad inputs ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "kwargs", "match"),
    [
        (TranslatedMNIST, {"canvas": 27}, "canvas=27"),
        (TranslatedMNIST, {"canvas": (60, 20)}, r"canvas=\(60, 20\)"),
        (TranslatedMNIST, {"canvas": "60"}, "canvas='60'"),
        (TranslatedMNIST, {"canvas": (60, 60, 1)}, "canvas="),
        (TranslatedMNIST, {"split": "dev"}, "split='dev'"),
        (TranslatedMNIST, {"seed": -1}, "seed=-1"),
        (TranslatedMNIST, {"limit": 0}, "limit=0"),
        (ClutteredMNIST, {"num_clutter": -1}, "num_clutter=-1"),
        (ClutteredMNIST, {"clutter_size": 0}, "clutter_size=0"),
        (ClutteredMNIST, {"clutter_size": 29}, "clutter_size=29"),
        (MultiMNIST, {"num_digits": 0}, "num_digits=0"),
        (MultiMNIST, {"canvas": (100, 50), "num_digits": 2}, "width >= 56"),
    ],
)
def test_bad_arguments_raise_value_error_naming_the_value(data_root, cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls(data_root, **kwargs)
