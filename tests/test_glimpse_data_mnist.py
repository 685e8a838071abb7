"""MNIST splits, data-root/cache paths, missing and corrupt data, the dataset registry."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from glimpse.data import (
    DATASETS,
    ClutteredMNIST,
    DatasetNotFoundError,
    MNISTSplit,
    MultiMNIST,
    TranslatedMNIST,
    cache_dir,
    default_root,
    get_dataset,
    load_mnist,
)
from glimpse.data.mnist import MNIST_FILES


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array in the IDX format of MNIST (magic 0x08, big-endian sizes)."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    header += b"".join(struct.pack(">I", s) for s in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def make_fake_mnist(root: Path, n_train: int = 50, n_test: int = 20) -> Path:
    """A tiny, valid MNIST in torchvision's layout under ``root/MNIST/raw``."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)
    return raw


# -- paths ---------------------------------------------------------------------------------


def test_default_root_and_cache_dir_follow_env(monkeypatch, tmp_path):
    monkeypatch.setenv("GLIMPSE_DATA", str(tmp_path / "d"))
    monkeypatch.setenv("GLIMPSE_CACHE", str(tmp_path / "c"))
    assert default_root() == tmp_path / "d"
    assert cache_dir() == tmp_path / "c"
    monkeypatch.delenv("GLIMPSE_DATA")
    monkeypatch.delenv("GLIMPSE_CACHE")
    assert default_root() == Path("data").absolute()
    assert cache_dir() == Path.home() / ".cache" / "glimpse"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GLIMPSE_DATA", "../rel")  # the README's relative form
    assert default_root() == tmp_path / ".." / "rel" and default_root().is_absolute()


# -- real MNIST ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mnist_splits(data_root):
    return {s: load_mnist(data_root, s) for s in ("train", "val", "test")}


def test_split_sizes_types_and_items(mnist_splits):
    train, val, test = mnist_splits["train"], mnist_splits["val"], mnist_splits["test"]
    assert (len(train), len(val), len(test)) == (55000, 5000, 10000)
    for ds in (train, val, test):
        assert isinstance(ds, MNISTSplit)
        assert ds.data.dtype == torch.uint8 and ds.data.shape[1:] == (28, 28)
        assert ds.targets.dtype == torch.int64 and ds.targets.shape == (len(ds),)
        assert len(ds.classes) == 10
    img, target = val[3]
    assert isinstance(img, Image.Image) and img.mode == "L" and img.size == (28, 28)
    assert isinstance(target, int) and target == int(val.targets[3])
    np.testing.assert_array_equal(np.asarray(img), val.data[3].numpy())


def test_val_is_disjoint_from_train_and_both_cover_the_official_train_set(mnist_splits):
    train, val = mnist_splits["train"], mnist_splits["val"]
    both = torch.cat([train.indices, val.indices])
    assert len(set(train.indices.tolist()) & set(val.indices.tolist())) == 0
    assert torch.equal(both.sort().values, torch.arange(60000))


def test_val_split_is_deterministic_and_depends_on_split_seed(data_root, mnist_splits):
    again = load_mnist(data_root, "val")
    assert torch.equal(again.indices, mnist_splits["val"].indices)
    assert torch.equal(again.data, mnist_splits["val"].data)
    other = load_mnist(data_root, "val", split_seed=1)
    assert not torch.equal(other.indices, again.indices)
    smaller = load_mnist(data_root, "val", val_size=100)
    assert len(smaller) == 100


def test_transforms_are_applied(data_root):
    ds = load_mnist(
        data_root, "test", transform=lambda im: np.asarray(im).sum(), target_transform=str
    )
    img, target = ds[0]
    assert img == int(ds.data[0].sum()) and target == str(int(ds.targets[0]))


def test_val_size_zero_keeps_all_training_images(data_root):
    assert len(load_mnist(data_root, "train", val_size=0)) == 60000
    with pytest.raises(ValueError, match="val_size=0"):
        load_mnist(data_root, "val", val_size=0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"split": "training"}, "split='training'"),
        ({"val_size": -1}, "val_size=-1"),
        ({"val_size": 60000}, "val_size=60000"),
        ({"split_seed": -3}, "split_seed=-3"),
        ({"val_size": 2.5}, "val_size=2.5"),
    ],
)
def test_bad_arguments_raise_value_error_naming_the_value(data_root, kwargs, match):
    with pytest.raises(ValueError, match=match):
        load_mnist(data_root, **kwargs)


# -- missing and corrupt data --------------------------------------------------------------


def test_missing_mnist_names_the_path_and_the_remedy(tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        load_mnist(tmp_path / "nowhere", "train")
    message = str(info.value)
    assert str(tmp_path / "nowhere" / "MNIST" / "raw") in message
    assert "GLIMPSE_DATA" in message and "download=True" in message
    assert isinstance(info.value, FileNotFoundError)


def test_root_defaults_to_glimpse_data(monkeypatch, tmp_path):
    make_fake_mnist(tmp_path)
    monkeypatch.setenv("GLIMPSE_DATA", str(tmp_path))
    assert len(load_mnist(split="test")) == 20


def test_fake_mnist_round_trip(tmp_path):
    make_fake_mnist(tmp_path)
    ds = load_mnist(tmp_path, "train", val_size=10)
    assert len(ds) == 40 and ds.data.shape == (40, 28, 28)


@pytest.mark.parametrize(
    "damage",
    ["truncated", "garbage", "empty", "labels_of_wrong_length"],
)
def test_corrupt_idx_file_raises_dataset_not_found(tmp_path, damage):
    raw = make_fake_mnist(tmp_path)
    images = raw / "train-images-idx3-ubyte"
    if damage == "truncated":
        images.write_bytes(images.read_bytes()[:1000])
    elif damage == "garbage":
        images.write_bytes(np.random.default_rng(1).bytes(5000))
    elif damage == "empty":
        images.write_bytes(b"")
    else:
        write_idx(raw / "train-labels-idx1-ubyte", np.zeros(7))
    with pytest.raises(DatasetNotFoundError) as info:
        load_mnist(tmp_path, "train", val_size=10)
    named = raw if damage == "labels_of_wrong_length" else images
    assert str(named) in str(info.value) and "GLIMPSE_DATA" in str(info.value)


@pytest.mark.parametrize(
    ("name", "damage", "why"),
    [
        # "(AssertionError: )" before: torchvision's reader asserts with no message.
        (
            "train-labels-idx1-ubyte",
            "random",
            r"bad magic number 0x[0-9a-f]{8}, expected 0x00000801 for an IDX label file",
        ),
        (
            "train-images-idx3-ubyte",
            "random",
            r"bad magic number 0x[0-9a-f]{8}, expected 0x00000803 for an IDX image file",
        ),
        (
            "train-labels-idx1-ubyte",
            "truncated",
            "30 bytes, but its header promises 50 values, 58 bytes",
        ),
        ("train-labels-idx1-ubyte", "short-header", "6 bytes, too short for the 8-byte header"),
        ("train-images-idx3-ubyte", "empty", "0 bytes, too short for the 4-byte IDX magic number"),
    ],
)
def test_corrupt_idx_file_says_what_is_wrong_on_one_line(tmp_path, name, damage, why):
    path = make_fake_mnist(tmp_path) / name
    good = path.read_bytes()
    bad = {"random": np.random.default_rng(1).bytes(5000), "truncated": good[:30]}
    path.write_bytes(bad.get(damage, b"" if damage == "empty" else good[:6]))
    with pytest.raises(DatasetNotFoundError) as info:
        load_mnist(tmp_path, "train", val_size=10)
    message = str(info.value)
    prefix = f"MNIST file {re.escape(str(path))} is corrupt or not an IDX file "
    assert re.match(rf"{prefix}\({why}\)\. Replace it with a good copy", message), message
    assert "\n" not in message


def test_one_missing_file_is_named(tmp_path):
    raw = make_fake_mnist(tmp_path)
    (raw / MNIST_FILES[3]).unlink()
    with pytest.raises(DatasetNotFoundError, match=MNIST_FILES[3]):
        load_mnist(tmp_path, "test")


def test_failed_download_raises_dataset_not_found(tmp_path, monkeypatch):
    from torchvision.datasets import MNIST

    def offline(self):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz")

    monkeypatch.setattr(MNIST, "download", offline)
    with pytest.raises(DatasetNotFoundError, match="Error downloading"):
        load_mnist(tmp_path, "train", download=True)


# -- registry ------------------------------------------------------------------------------


def test_registry_names():
    assert DATASETS == (
        "mnist",
        "translated60",
        "cluttered60",
        "cluttered100",
        "multimnist",
        "twodigit100",
        "dram-pairs",
        "dram-addition",
        "stn-cluttered60",
    )


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="cluttered60") as info:
        get_dataset("svhn")
    assert "'svhn'" in str(info.value)


@pytest.mark.parametrize(
    ("name", "cls", "attrs"),
    [
        ("mnist", MNISTSplit, {}),
        ("translated60", TranslatedMNIST, {"canvas": (60, 60)}),
        ("cluttered60", ClutteredMNIST, {"canvas": (60, 60), "num_clutter": 4}),
        ("cluttered100", ClutteredMNIST, {"canvas": (100, 100), "num_clutter": 8}),
        ("multimnist", MultiMNIST, {"canvas": (100, 100), "num_digits": 2}),
    ],
)
def test_get_dataset_builds_the_preset(data_root, name, cls, attrs):
    kwargs = {} if name == "mnist" else {"limit": 8}
    ds = get_dataset(name, split="test", root=data_root, **kwargs)
    assert isinstance(ds, cls)
    for key, value in attrs.items():
        assert getattr(ds, key) == value


def test_get_dataset_refuses_to_override_a_fixed_parameter(data_root):
    with pytest.raises(ValueError, match="canvas=60"):
        get_dataset("cluttered60", root=data_root, canvas=100)
