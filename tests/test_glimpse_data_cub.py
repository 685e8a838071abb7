"""CUB-200-2011 on a generated tiny copy, joint transforms, and the safe tar extractor."""

from __future__ import annotations

import io
import re
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

import glimpse.data.transforms as T
from glimpse.data import CUB200, DatasetNotFoundError
from glimpse.data.cub import UnsafeArchiveError, safe_extract_tar
from tests.helpers.cub import PART_NAMES, make_tiny_cub


@pytest.fixture
def cub(tmp_path):
    return make_tiny_cub(tmp_path / "root")


# -- dataset -------------------------------------------------------------------------------


@pytest.mark.parametrize("train", [True, False])
def test_labels_split_and_images(cub, train):
    ds = CUB200(cub.root, train=train)
    ids = cub.ids(train)
    assert ds.image_ids.tolist() == ids and len(ds) == len(ids)
    assert ds.targets.tolist() == [cub.labels[i - 1] for i in ids]
    assert ds.classes == cub.classes
    for k, i in enumerate(ids):
        image, label = ds[k]
        assert isinstance(label, int) and label == cub.labels[i - 1]
        assert image.mode == "RGB" and image.size == cub.sizes[i - 1]


def test_train_and_test_are_disjoint_and_cover_everything(cub):
    train, test = CUB200(cub.root, train=True), CUB200(cub.root, train=False)
    ids = set(train.image_ids.tolist()) | set(test.image_ids.tolist())
    assert not set(train.image_ids.tolist()) & set(test.image_ids.tolist())
    assert ids == set(range(1, len(cub.paths) + 1))


def test_boxes_are_converted_to_corners(cub):
    ds = CUB200(cub.root, target_type="box")
    for k, i in enumerate(ds.image_ids.tolist()):
        x, y, w, h = cub.boxes_xywh[i - 1]
        _, box = ds[k]
        assert box.dtype == torch.float32
        assert box.tolist() == [x, y, x + w, y + h]


def test_parts_and_target_order(cub):
    ds = CUB200(cub.root, train=False, target_type=("parts", "label", "box"))
    assert ds.part_names == list(PART_NAMES)
    for k, i in enumerate(ds.image_ids.tolist()):
        _, (parts, label, box) = ds[k]
        assert parts.shape == (15, 3) and parts.dtype == torch.float32
        np.testing.assert_array_equal(parts.numpy(), cub.parts[i - 1])
        assert label == cub.labels[i - 1] and box.shape == (4,)
    invisible = ds.parts[..., 2] == 0
    assert invisible.any() and (ds.parts[invisible] == 0).all()


def test_annotations_are_loaded_only_when_asked(cub):
    ds = CUB200(cub.root)
    assert ds.boxes is None and ds.parts is None
    (cub.root / "CUB_200_2011" / "parts" / "part_locs.txt").unlink()
    assert CUB200(cub.root, target_type=("label", "box"))[0][1][1].shape == (4,)


def test_joint_transform_gets_image_box_and_parts(cub):
    calls = []

    def record(image, box, parts):
        calls.append((image.size, box, parts))
        return "image", box, parts

    ds = CUB200(cub.root, target_type="box", transform=record)
    image, box = ds[0]
    assert image == "image" and torch.equal(box, ds.boxes[0])
    assert calls[0][2] is None  # parts not requested


def test_dataloader_batches_a_transformed_dataset(cub):
    transform = T.Compose(
        [
            T.Resize((32, 48)),
            T.RandomHorizontalFlip(generator=torch.Generator().manual_seed(0)),
            T.ToTensor(),
            T.Normalize([0.5] * 3, [0.25] * 3),
        ]
    )
    ds = CUB200(cub.root, target_type=("label", "box", "parts"), transform=transform)
    images, (labels, boxes, parts) = next(iter(DataLoader(ds, batch_size=4)))
    assert images.shape == (4, 3, 32, 48) and images.dtype == torch.float32
    assert labels.shape == (4,) and boxes.shape == (4, 4) and parts.shape == (4, 15, 3)


@pytest.mark.parametrize("bad", ["bbox", ("label", "mask"), ()])
def test_unknown_target_type(cub, bad):
    with pytest.raises(ValueError, match="target_type="):
        CUB200(cub.root, target_type=bad)


@pytest.mark.parametrize(
    ("missing", "target_type"),
    [
        ("images.txt", "label"),
        ("classes.txt", "label"),
        ("image_class_labels.txt", "label"),
        ("train_test_split.txt", "label"),
        ("bounding_boxes.txt", "box"),
        ("parts/parts.txt", "parts"),
        ("parts/part_locs.txt", "parts"),
    ],
)
def test_missing_file_names_the_path(cub, missing, target_type):
    path = cub.root / "CUB_200_2011" / missing
    path.unlink()
    with pytest.raises(DatasetNotFoundError) as info:
        CUB200(cub.root, target_type=target_type)
    assert str(path) in str(info.value) and "GLIMPSE_DATA" in str(info.value)


def test_missing_root_and_missing_image(tmp_path, cub):
    with pytest.raises(DatasetNotFoundError, match="CUB_200_2011"):
        CUB200(tmp_path / "empty")
    ds = CUB200(cub.root)
    path = cub.root / "CUB_200_2011" / "images" / ds.image_paths[1]
    path.unlink()
    with pytest.raises(DatasetNotFoundError, match=re.escape(str(path))):
        ds[1]


def test_corrupt_table_is_reported(cub):
    path = cub.root / "CUB_200_2011" / "bounding_boxes.txt"
    path.write_text("1 2.0 three 4.0 5.0\n")
    with pytest.raises(DatasetNotFoundError, match="corrupt"):
        CUB200(cub.root, target_type="box")


def test_truncated_image_names_its_path(cub):
    # "OSError: Truncated File Read" (or "image file is truncated") with no path before.
    ds = CUB200(cub.root)
    path = cub.root / "CUB_200_2011" / "images" / ds.image_paths[2]
    path.write_bytes(path.read_bytes()[:400])
    with pytest.raises(DatasetNotFoundError) as info:
        ds[2]
    message = str(info.value)
    assert message.startswith(f"CUB-200-2011 file {path} is corrupt (unreadable image: ")
    assert "GLIMPSE_DATA" in message and "\n" not in message
    ds[1]  # the others still load


@pytest.mark.parametrize("name", ["images.txt", "classes.txt", "parts/parts.txt"])
def test_duplicate_id_blames_the_file_that_repeats_it(cub, name):
    # A repeated id in images.txt was reported as image_class_labels.txt being corrupt.
    path = cub.root / "CUB_200_2011" / name
    lines = path.read_text().splitlines()
    repeated = lines[1].split()[0]
    lines.insert(3, "")  # blank lines are skipped but still counted
    lines.append(f"{repeated} copy.jpg")
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetNotFoundError) as info:
        CUB200(cub.root, target_type=("label", "parts"))
    assert str(info.value).startswith(
        f"CUB-200-2011 file {path} is corrupt (id {repeated} on line {len(lines)} is already "
        "listed on line 2). "
    )


# -- joint transforms ----------------------------------------------------------------------


def marked_sample(w: int = 50, h: int = 40) -> tuple[Image.Image, torch.Tensor, torch.Tensor]:
    """A black RGB image with one white pixel under each visible part.

    Parts sit at pixel centres ``(i + 0.5, j + 0.5)``; left eye (id 7) and right eye
    (id 11) are visible at different places, the beak (id 2) is invisible.
    """
    rng = np.random.default_rng(3)
    parts = np.zeros((15, 3), np.float32)
    cols = rng.choice(w, 15, replace=False)
    rows = rng.integers(0, h, 15)
    parts[:, 0], parts[:, 1], parts[:, 2] = cols + 0.5, rows + 0.5, 1
    parts[1] = 0
    pixels = np.zeros((h, w, 3), np.uint8)
    visible = parts[:, 2] > 0
    pixels[rows[visible], cols[visible]] = 255
    box = torch.tensor([5.0, 4.0, 30.0, 36.0])
    return Image.fromarray(pixels), box, torch.from_numpy(parts)


def marks_under_parts(image: Image.Image | torch.Tensor, parts: torch.Tensor) -> bool:
    pixels = np.asarray(image) if isinstance(image, Image.Image) else image.permute(1, 2, 0).numpy()
    visible = parts[:, 2] > 0
    xs, ys = parts[visible, 0].floor().long(), parts[visible, 1].floor().long()
    return bool((pixels[ys.numpy(), xs.numpy()] > 0).all())


def test_hflip_mirrors_x_and_swaps_left_right_parts():
    image, box, parts = marked_sample()
    flipped, fbox, fparts = T.RandomHorizontalFlip(p=1.0)(image, box, parts)
    assert fbox.tolist() == [50 - 30.0, 4.0, 50 - 5.0, 36.0]
    left_eye, right_eye, back = 6, 10, 0
    assert fparts[right_eye].tolist() == [50 - parts[left_eye, 0].item(), parts[left_eye, 1], 1]
    assert fparts[left_eye].tolist() == [50 - parts[right_eye, 0].item(), parts[right_eye, 1], 1]
    assert fparts[back, 0] == 50 - parts[back, 0]
    assert fparts[1].tolist() == [0, 0, 0]  # invisible beak stays at 0
    for left, right in ((7, 11), (8, 12)):  # legs, wings
        assert torch.equal(fparts[left, 1:], parts[right, 1:])
    assert marks_under_parts(flipped, fparts)
    twice = T.hflip(*T.hflip(image, box, parts))
    assert torch.equal(twice[1], box) and torch.equal(twice[2], parts)
    assert T.CUB_MIRROR_PAIRS == ((6, 10), (7, 11), (8, 12))
    assert T.mirror_pairs(PART_NAMES) == T.CUB_MIRROR_PAIRS


def test_random_flip_probability_and_generator():
    image, box, parts = marked_sample()
    assert T.RandomHorizontalFlip(p=0.0)(image, box, parts)[1] is box
    draws = [
        [
            T.RandomHorizontalFlip(generator=torch.Generator().manual_seed(s))(image, box, parts)[
                1
            ][0].item()
            for s in range(20)
        ]
        for _ in range(2)
    ]
    assert draws[0] == draws[1] and len(set(draws[0])) == 2
    with pytest.raises(ValueError, match=r"p=1\.5"):
        T.RandomHorizontalFlip(p=1.5)


def test_resize_scales_box_and_parts():
    image, box, parts = marked_sample()
    out, rbox, rparts = T.Resize((80, 150))(image, box, parts)
    assert out.size == (150, 80)
    assert torch.allclose(rbox, box * torch.tensor([3.0, 2.0, 3.0, 2.0]))
    assert torch.allclose(rparts, parts * torch.tensor([3.0, 2.0, 1.0]))
    shorter, sbox, _ = T.Resize(20)(image, box, parts)  # shorter side (height 40) -> 20
    assert shorter.size == (25, 20) and torch.allclose(sbox, box / 2)
    tensor_out = T.Resize((80, 150))(T.ToTensor()(image)[0], box, parts)
    assert tensor_out[0].shape == (3, 80, 150) and torch.allclose(tensor_out[1], rbox)


def test_center_crop_shifts_clips_and_hides_parts_outside():
    image, box, parts = marked_sample()
    out, cbox, cparts = T.CenterCrop((20, 30))(image, box, parts)  # window x 10..40, y 10..30
    assert out.size == (30, 20)
    assert cbox.tolist() == [0.0, 0.0, 20.0, 20.0]
    inside = (
        (parts[:, 2] > 0)
        & (parts[:, 0] >= 10)
        & (parts[:, 0] < 40)
        & (parts[:, 1] >= 10)
        & (parts[:, 1] < 30)
    )
    assert torch.equal(cparts[:, 2] > 0, inside)
    assert 0 < int(inside.sum()) < 14
    assert (cparts[~inside] == 0).all()
    assert torch.equal(cparts[inside, :2], parts[inside, :2] - torch.tensor([10.0, 10.0]))
    assert marks_under_parts(out, cparts)


@pytest.mark.parametrize("seed", range(5))
def test_random_crops_keep_parts_on_their_pixels(seed):
    image, box, parts = marked_sample()
    gen = torch.Generator().manual_seed(seed)
    out, cbox, cparts = T.RandomCrop((25, 35), generator=gen)(image, box, parts)
    assert out.size == (35, 25) and marks_under_parts(out, cparts)
    assert (cbox >= 0).all() and (cbox[0::2] <= 35).all() and (cbox[1::2] <= 25).all()
    rrc = T.RandomResizedCrop(64, scale=(0.2, 0.6), generator=gen)
    top, left, h, w = rrc.window(40, 50)
    assert 0 <= top <= 40 - h and 0 <= left <= 50 - w
    out, rbox, rparts = rrc(image, box, parts)
    assert out.size == (64, 64) and (rbox >= 0).all() and (rbox <= 64).all()
    visible = rparts[:, 2] > 0
    assert ((rparts[visible, :2] >= 0) & (rparts[visible, :2] < 64)).all()
    assert (rparts[~visible] == 0).all()


def test_random_crop_refuses_a_window_larger_than_the_image():
    image, box, parts = marked_sample()
    with pytest.raises(ValueError, match="larger than the image"):
        T.RandomCrop(41)(image, box, parts)
    with pytest.raises(ValueError, match="size=0"):
        T.CenterCrop(0)


def test_transforms_pass_none_targets_through():
    image, _, _ = marked_sample()
    out = T.Compose([T.RandomResizedCrop(16), T.RandomHorizontalFlip(1.0), T.ToTensor()])(
        image, None, None
    )
    assert out[0].shape == (3, 16, 16) and out[1] is None and out[2] is None


def test_image_only_wraps_an_image_transform():
    image, box, parts = marked_sample()
    out, obox, oparts = T.ImageOnly(lambda im: im.convert("L"))(image, box, parts)
    assert out.mode == "L" and obox is box and oparts is parts


# -- archive extraction and download -------------------------------------------------------


def _tar_with(path: Path, *members: tuple[str, str, bytes | str]) -> Path:
    """A .tgz with ``(kind, name, payload)`` members: kind "file" or "symlink"."""
    with tarfile.open(path, "w:gz") as tar:
        for kind, name, payload in members:
            info = tarfile.TarInfo(name)
            if kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, str(payload)
                tar.addfile(info)
            elif kind == "fifo":
                info.type = tarfile.FIFOTYPE
                tar.addfile(info)
            else:
                data = payload if isinstance(payload, bytes) else payload.encode()
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.parametrize(
    "evil",
    [
        ("file", "../escaped.txt", b"x"),
        ("file", "inside/../../escaped.txt", b"x"),
        ("file", "/tmp/glimpse-escaped-absolute.txt", b"x"),
        ("symlink", "link", "../outside"),
        ("symlink", "link", "/etc"),
        ("symlink", "deep/link", "../../outside"),
        ("fifo", "pipe", b""),
    ],
)
def test_safe_extract_refuses_escaping_members_and_writes_nothing(tmp_path, evil):
    archive = _tar_with(tmp_path / "evil.tgz", ("file", "ok.txt", b"fine"), evil)
    dest = tmp_path / "dest"
    with pytest.raises(UnsafeArchiveError, match=re.escape(repr(evil[1]))):
        safe_extract_tar(archive, dest)
    assert list(dest.iterdir()) == []  # refused before anything was written
    assert not (tmp_path / "escaped.txt").exists()
    assert not Path("/tmp/glimpse-escaped-absolute.txt").exists()


def test_safe_extract_refuses_writing_through_a_link(tmp_path):
    (tmp_path / "outside").mkdir()
    archive = _tar_with(
        tmp_path / "evil.tgz", ("symlink", "a", "."), ("symlink", "a/b", "../outside")
    )
    with pytest.raises(UnsafeArchiveError):
        safe_extract_tar(archive, tmp_path / "dest")
    assert list((tmp_path / "outside").iterdir()) == []


def test_safe_extract_accepts_a_benign_archive_with_inner_links(tmp_path):
    archive = _tar_with(
        tmp_path / "ok.tgz",
        ("file", "top/a.txt", b"hello"),
        ("symlink", "top/alias.txt", "a.txt"),
    )
    safe_extract_tar(archive, tmp_path / "dest")
    assert (tmp_path / "dest" / "top" / "alias.txt").read_text() == "hello"


def test_download_fetches_checks_and_extracts(tmp_path, monkeypatch):
    made = make_tiny_cub(tmp_path / "made")
    archive = tmp_path / "CUB_200_2011.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(made.root / "CUB_200_2011", arcname="CUB_200_2011")
    calls = []

    def fake_download_url(url, root, filename=None, md5=None):
        calls.append((url, md5))
        Path(root).mkdir(parents=True, exist_ok=True)
        (Path(root) / filename).write_bytes(archive.read_bytes())

    import torchvision.datasets.utils

    monkeypatch.setattr(torchvision.datasets.utils, "download_url", fake_download_url)
    ds = CUB200(tmp_path / "fresh", download=True, target_type=("label", "box"))
    assert calls == [
        (
            "https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz",
            "97eceeb196236b17998738112f37df78",
        )
    ]
    assert len(ds) == len(made.ids(True)) and ds[0][1][0] == made.labels[0]
    CUB200(tmp_path / "fresh", download=True)  # already there: no second download
    assert len(calls) == 1


def test_failed_download_raises_dataset_not_found(tmp_path, monkeypatch):
    import torchvision.datasets.utils

    def offline(*args, **kwargs):
        raise RuntimeError("File not found or corrupted.")

    monkeypatch.setattr(torchvision.datasets.utils, "download_url", offline)
    with pytest.raises(DatasetNotFoundError, match="could not download"):
        CUB200(tmp_path, download=True)
