"""The first-glimpse location probe (``glimpse.experiments.probe``): it finds an object a
glimpse shows, stays at the baseline for one it cannot see, and refuses tasks without
boxes; ``scripts/probe_location.py`` on real cluttered MNIST."""

from __future__ import annotations

import dataclasses
import importlib.util
import json

import pytest
import torch

from glimpse.data import ImageSource
from glimpse.experiments.probe import ProbeConfig, probe_first_glimpse, run_probe
from glimpse.retina import Retina
from tests.conftest import REPO

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def squares(n: int, size: int = 60, side: int = 12, seed: int = 0, keep_out: int = 0):
    """``n`` black images with one white ``side`` square each, at a random position whose
    centre is at least ``keep_out`` pixels (in both axes) from the image centre; boxes."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.zeros(n, 1, size, size)
    boxes = torch.zeros(n, 4)
    for i in range(n):
        while True:
            x0, y0 = torch.randint(0, size - side + 1, (2,), generator=gen).tolist()
            cx, cy = x0 + side / 2 - size / 2, y0 + side / 2 - size / 2
            if min(abs(cx), abs(cy)) >= keep_out:
                break
        images[i, 0, y0 : y0 + side, x0 : x0 + side] = 1.0
        boxes[i] = torch.tensor([x0, y0, x0 + side, y0 + side])
    return ImageSource(images, torch.zeros(n, dtype=torch.long), boxes)


CFG = ProbeConfig(epochs=40, batch_size=64, hidden=64, seed=0)


def test_the_probe_finds_an_object_the_glimpse_shows():
    """Three scales at the centre see the whole 60x60 canvas: the probe puts its predicted
    centre in the square for almost every test image, far above both baselines."""
    out = probe_first_glimpse(squares(1500, seed=0), squares(300, seed=1), Retina(12, 3), CFG)
    every = out["probes"]["all scales"]
    assert every["in_box"] > 0.9
    assert every["error_px"] < 4.0
    assert out["baselines"]["training mean"]["in_box"] < 0.2
    assert out["baselines"]["first fixation"]["in_box"] < 0.2
    assert out["chance_in_box"] == pytest.approx(144 / 3600)
    # The finest scale alone (12x12 at the centre) misses most squares.
    assert out["probes"]["scale 1"]["in_box"] < every["in_box"] - 0.3
    assert out["test_images"] == 300


def test_the_probe_from_random_first_fixations():
    """From a random first fixation (RAM's default), given the glimpse and where it was
    taken, the probe still locates most squares, far above staying at the fixation; the
    fixations are seeded (the same config draws the same ones)."""
    cfg = dataclasses.replace(CFG, first_fixation="random")
    train, test = squares(1500, seed=0), squares(300, seed=1)
    out = probe_first_glimpse(train, test, Retina(12, 3), cfg)
    every, stay = out["probes"]["all scales"], out["baselines"]["first fixation"]
    assert every["in_box"] > 0.5
    assert stay["in_box"] < 0.15
    assert every["error_px"] < stay["error_px"] / 3
    assert probe_first_glimpse(train, test, Retina(12, 3), cfg)["probes"] == out["probes"]


def test_the_probe_cannot_find_what_the_glimpse_does_not_show():
    """One 8x8 scale at the centre never overlaps a square kept 14 px away: the glimpse is
    blank, so the probe can do no better than the training mean (no label leaks)."""
    train, test = squares(800, keep_out=14, seed=2), squares(300, keep_out=14, seed=3)
    assert train.images[:, :, 26:34, 26:34].sum() == 0  # the glimpse's pixels are empty
    out = probe_first_glimpse(train, test, Retina(8, 1), CFG)
    probe, mean = out["probes"]["all scales"], out["baselines"]["training mean"]
    assert list(out["probes"]) == ["all scales"]
    assert probe["in_box"] <= mean["in_box"] + 0.02
    assert probe["error_px"] == pytest.approx(mean["error_px"], rel=0.05)


def test_the_probe_needs_one_box_per_image():
    src = squares(10)
    no_boxes = ImageSource(src.images, src.labels)
    with pytest.raises(ValueError, match="train images must record one"):
        probe_first_glimpse(no_boxes, src, Retina(12, 3), CFG)


@pytest.mark.parametrize(
    ("task", "message"),
    [("nope", "--task must be one of"), ("multimnist", "single-digit task"), ("mnist", "boxes")],
)
def test_run_probe_refuses_tasks_it_cannot_probe(task, message, data_root):
    with pytest.raises(ValueError, match=message):
        run_probe(ProbeConfig(task=task, data_root=str(data_root), train_images=10))


def test_run_probe_refuses_bad_numbers():
    with pytest.raises(ValueError, match="--epochs must be"):
        run_probe(ProbeConfig(epochs=0))


def test_the_script_on_cluttered_mnist(data_root, tmp_path, capsys):
    """``scripts/probe_location.py`` on real cluttered 60x60 MNIST: the JSON it writes is
    what it prints, and the probe on all three scales beats the training-mean baseline."""
    spec = importlib.util.spec_from_file_location("probe", REPO / "scripts" / "probe_location.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "probe.json"
    args = ["--task", "cluttered60", "--data-root", str(data_root), "--out", str(out)]
    result = script.main([*args, "--train-images", "1500", "--test-images", "300", "--epochs", "8"])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(result))
    assert list(result["probes"]) == ["scale 1", "scale 2", "scale 3", "all scales"]
    assert result["probes"]["all scales"]["in_box"] > result["baselines"]["training mean"]["in_box"]
    assert (
        result["probes"]["all scales"]["error_px"]
        < result["baselines"]["training mean"]["error_px"] - 3
    )
