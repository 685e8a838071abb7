"""The DRAM paper's digit pairs (:mod:`glimpse.data.pairs`) and the STN paper's cluttered
MNIST preset: geometry, boxes, labels, determinism, ``limit``, the cache, the registry."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from glimpse.data import ClutteredMNIST, DigitPairsMNIST, get_dataset, load_mnist, pair_index
from glimpse.data.pairs import PAIRS


@pytest.fixture(scope="module")
def source(data_root):
    """The official MNIST test split, source of every synthetic ``split="test"`` image."""
    return load_mnist(data_root, "test")


def inside(h: int, w: int, boxes: torch.Tensor) -> torch.Tensor:
    """``(N, H, W)`` mask of the pixels inside each image's box ``(N, 4)``."""
    ys, xs = torch.arange(h)[:, None], torch.arange(w)[None, :]
    b = boxes[:, :, None, None]
    return (xs >= b[:, 0]) & (xs < b[:, 2]) & (ys >= b[:, 1]) & (ys < b[:, 3])


def crop(data: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
    x0, y0, x1, y1 = (int(v) for v in box)
    return data[y0:y1, x0:x1]


# -- labels --------------------------------------------------------------------------------


def test_pairs_are_the_55_unordered_pairs_and_pair_index_ignores_order():
    assert len(PAIRS) == len(set(PAIRS)) == 55
    assert all(a <= b for a, b in PAIRS)
    digits = np.array([(a, b) for a in range(10) for b in range(10)])
    idx = pair_index(digits)
    np.testing.assert_array_equal(idx, pair_index(digits[:, ::-1]))
    assert sorted(set(idx.tolist())) == list(range(55))
    for k, pair in enumerate(PAIRS):
        assert pair_index(np.array(pair)) == k
    with pytest.raises(ValueError, match=r"0\.\.9"):
        pair_index(np.array([3, 10]))
    with pytest.raises(ValueError, match=r"\(\.\.\., 2\)"):
        pair_index(np.array([1, 2, 3]))


@pytest.mark.parametrize(("label", "classes"), [("pair", 55), ("sum", 19)])
def test_targets_follow_the_label_definition(data_root, label, classes):
    ds = DigitPairsMNIST(data_root, "test", label=label, cache=False, limit=300)
    assert len(ds.classes) == classes
    assert ds.targets.shape == (300,) and ds.targets.dtype == torch.int64
    assert ds.digits.shape == (300, 2) and ds.digits.dtype == torch.int64
    want = pair_index(ds.digits.numpy()) if label == "pair" else ds.digits.sum(1).numpy()
    np.testing.assert_array_equal(ds.targets.numpy(), want)
    assert 0 <= int(ds.targets.min()) and int(ds.targets.max()) < classes
    if label == "pair":  # the class name is the pair
        for t, (a, b) in zip(ds.targets[:20].tolist(), ds.digits[:20].tolist(), strict=True):
            assert ds.classes[t] == f"{min(a, b)},{max(a, b)}"


# -- geometry ------------------------------------------------------------------------------


@pytest.mark.parametrize("canvas", [100, (60, 90)])
def test_digits_sit_in_disjoint_boxes_inside_the_canvas(data_root, source, canvas):
    """Without distractors: every pixel lies in one of the two boxes, which are disjoint,
    inside the canvas, ordered left to right, and hold a source digit of their label."""
    ds = DigitPairsMNIST(data_root, "test", canvas, num_clutter=0, cache=False, limit=200)
    h, w = ds.canvas
    assert ds.data.shape == (200, h, w) and ds.data.dtype == torch.uint8
    b = ds.boxes
    assert b.shape == (200, 2, 4) and b.dtype == torch.float32
    assert (b[..., 2:] - b[..., :2] == 28).all()
    assert b[..., :2].min() >= 0 and b[..., 2].max() <= w and b[..., 3].max() <= h
    apart_x = (b[:, 0, 2] <= b[:, 1, 0]) | (b[:, 1, 2] <= b[:, 0, 0])
    apart_y = (b[:, 0, 3] <= b[:, 1, 1]) | (b[:, 1, 3] <= b[:, 0, 1])
    assert (apart_x | apart_y).all()  # the frames never overlap
    cx = b[..., 0] + b[..., 2]
    assert (cx[:, 0] <= cx[:, 1]).all()  # left to right
    covered = inside(h, w, b[:, 0]) | inside(h, w, b[:, 1])
    assert (ds.data * ~covered).count_nonzero() == 0
    assert ds.clutter_boxes.shape == (200, 0, 4)
    by_label = {c: source.data[source.targets == c].flatten(1) for c in range(10)}
    for i in range(40):
        for j in range(2):
            patch = crop(ds.data[i], b[i, j]).flatten()
            assert (by_label[int(ds.digits[i, j])] == patch).all(1).any()


def test_first_digit_is_the_images_own_source_digit(data_root, source):
    ds = DigitPairsMNIST(data_root, "test", num_clutter=0, cache=False, limit=50)
    for i in range(50):
        own = source.data[i]
        held = [torch.equal(crop(ds.data[i], ds.boxes[i, j]), own) for j in range(2)]
        assert any(held)
        assert int(ds.digits[i, held.index(True)]) == int(source.targets[i])


def test_distractors_have_their_count_size_and_boxes(data_root):
    """Every non-zero pixel lies in a digit's box or a recorded distractor box, each
    distractor box is clutter_size wide and inside the canvas, and the distractors only
    add ink (max) to the images without them."""
    ds = DigitPairsMNIST(data_root, "test", num_clutter=5, clutter_size=7, cache=False, limit=200)
    bare = DigitPairsMNIST(data_root, "test", num_clutter=0, cache=False, limit=200)
    assert torch.equal(ds.boxes, bare.boxes) and torch.equal(ds.digits, bare.digits)
    c = ds.clutter_boxes
    assert c.shape == (200, 5, 4) and c.dtype == torch.float32
    assert (c[..., 2:] - c[..., :2] == 7).all()
    assert c[..., :2].min() >= 0 and c[..., 2:].max() <= 100
    covered = inside(100, 100, ds.boxes[:, 0]) | inside(100, 100, ds.boxes[:, 1])
    for j in range(5):
        covered |= inside(100, 100, c[:, j])
    assert (ds.data * ~covered).count_nonzero() == 0
    assert (ds.data >= bare.data).all() and (ds.data != bare.data).any()


# -- determinism, limit, cache, arguments ----------------------------------------------------


def test_generation_is_seeded_and_limit_gives_the_first_images(data_root):
    canvas = (56, 64)  # small, so that the whole test split is quick
    full = DigitPairsMNIST(data_root, "test", canvas, num_clutter=2, cache=False)
    assert len(full) == 10_000
    head = DigitPairsMNIST(data_root, "test", canvas, num_clutter=2, cache=False, limit=37)
    assert len(head) == 37
    for name in ("data", "targets", "digits", "boxes", "clutter_boxes"):
        assert torch.equal(getattr(head, name), getattr(full, name)[:37]), name
    again = DigitPairsMNIST(data_root, "test", canvas, num_clutter=2, cache=False, limit=37)
    assert torch.equal(again.data, head.data) and torch.equal(again.targets, head.targets)
    other = DigitPairsMNIST(data_root, "test", canvas, num_clutter=2, seed=1, cache=False, limit=37)
    assert not torch.equal(other.data, head.data)
    val = DigitPairsMNIST(data_root, "val", canvas, num_clutter=2, cache=False, limit=37)
    assert not torch.equal(val.data, head.data)


def test_both_labels_share_one_cache_file(data_root):
    pair = DigitPairsMNIST(data_root, "test", label="pair", seed=5, limit=40)
    total = DigitPairsMNIST(data_root, "test", label="sum", seed=5, limit=40)
    assert not pair.from_cache and total.from_cache and pair.cache_path == total.cache_path
    assert torch.equal(pair.data, total.data) and torch.equal(pair.digits, total.digits)
    assert torch.equal(pair.clutter_boxes, total.clutter_boxes)
    assert torch.equal(total.targets, pair.digits.sum(1))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"label": "product"}, r"label='product' must be one of pair, sum"),
        ({"canvas": (40, 50)}, r"cannot hold two disjoint 28x28 digits"),
        ({"canvas": 20}, r"too small"),
        ({"num_clutter": -1}, r"num_clutter"),
        ({"clutter_size": 29}, r"clutter_size"),
    ],
)
def test_bad_arguments_raise_value_error(data_root, kwargs, match):
    with pytest.raises(ValueError, match=match):
        DigitPairsMNIST(data_root, "test", cache=False, limit=2, **kwargs)


# -- the registered presets ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "label", "classes"), [("dram-pairs", "pair", 55), ("dram-addition", "sum", 19)]
)
def test_dram_presets(data_root, name, label, classes):
    ds = get_dataset(name, "test", data_root, limit=8)
    assert isinstance(ds, DigitPairsMNIST)
    assert (ds.canvas, ds.label, ds.num_clutter, ds.clutter_size) == ((100, 100), label, 8, 8)
    assert len(ds.classes) == classes and len(ds) == 8
    with pytest.raises(ValueError, match="fixes canvas=100"):
        get_dataset(name, "test", data_root, canvas=60)


def test_stn_cluttered_preset(data_root):
    ds = get_dataset("stn-cluttered60", "test", data_root, limit=50)
    assert isinstance(ds, ClutteredMNIST)
    assert (ds.canvas, ds.num_clutter, ds.clutter_size) == ((60, 60), 8, 6)
    c = ds.clutter_boxes
    assert c.shape == (50, 8, 4) and (c[..., 2:] - c[..., :2] == 6).all()
    assert c[..., :2].min() >= 0 and c[..., 2:].max() <= 60
    assert (ds.boxes[:, :2] >= 0).all() and (ds.boxes[:, 2:] <= 60).all()
    covered = inside(60, 60, ds.boxes)
    for j in range(8):
        covered |= inside(60, 60, c[:, j])
    assert (ds.data * ~covered).count_nonzero() == 0
