"""``scripts/attention_maps.py`` on a small trained run: the exported layout, and scores
recomputed from the exported fixations by hand."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REPO = Path(__file__).resolve().parent.parent


def _script():
    spec = importlib.util.spec_from_file_location(
        "attention_maps", REPO / "scripts" / "attention_maps.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, data_root):
    from agents.config import HardTrainConfig
    from agents.train import train_reinforce

    root = tmp_path_factory.mktemp("maps")
    cfg = HardTrainConfig(
        task="cluttered60",
        epochs=1,
        max_batches_per_epoch=2,
        batch_size=16,
        hidden=32,
        val_size=200,
        eval_limit=50,
        eval_batch_size=50,
        playback=0,
        init_location="random",
        data_root=str(data_root),
        runs_root=str(root),
        run_name="c60",
        device="cpu",
    )
    train_reinforce(cfg)
    return root / "c60"


def test_export_layout_and_scores_recomputed_by_hand(run_dir, tmp_path):
    out = tmp_path / "maps.npz"
    summary = _script().main([str(run_dir), "--limit", "30", "--num-maps", "5", "--out", str(out)])
    z = np.load(out)
    n, t = 30, 8
    assert z["fixations"].shape == (n, t, 2) and z["maps"].shape == (5, 60, 60)
    assert np.allclose(z["maps"].sum(axis=(1, 2)), 1.0, atol=1e-5)
    assert z["labels"].shape == (n, 1) and z["predictions"].shape == (n, 1)
    assert z["boxes"].shape == (n, 4) and z["clutter_boxes"].shape == (n, 4, 4)
    # fixations in the digit's frame, by hand: pixel = (loc + 1) / 2 * 60
    pix = (z["fixations"] + 1) / 2 * 60
    b = z["boxes"][:, None]
    hand = (pix[..., 0] >= b[..., 0]) & (pix[..., 0] <= b[..., 2])
    hand &= (pix[..., 1] >= b[..., 1]) & (pix[..., 1] <= b[..., 3])
    assert np.array_equal(z["fixation_in_box"], hand)
    assert summary["attention_in_box"] == pytest.approx(hand.mean())
    assert summary["attention_in_box_per_step"] == pytest.approx(hand.mean(0).tolist())
    # the footprint of the first map: mass in the frame by summing its pixels
    x0, y0, x1, y1 = z["boxes"][0].astype(int)
    assert z["mass_in_box"][0] == pytest.approx(z["maps"][0, y0:y1, x0:x1].sum(), abs=1e-5)
    assert np.all(
        (z["mass_on_clutter"] >= -1e-6) & (z["mass_in_box"] + z["mass_on_clutter"] <= 1 + 1e-6)
    )
    assert out.with_suffix(".json").is_file()
    # chance level: the boxes' share of the 60x60 image, by hand (boxes inside the image)
    area = (b[:, 0, 2] - b[:, 0, 0]) * (b[:, 0, 3] - b[:, 0, 1])
    assert summary["chance_in_box"] == pytest.approx(float((area / 3600).mean()), rel=1e-6)


def test_the_default_export_feeds_the_results_rows(run_dir):
    """``scripts/attention_maps.py RUN`` writes ``attention/test-best.json``, whose scores
    ``scripts/results_table.py`` puts in the single-mean row (the policy it measured)."""
    from glimpse.results import ATTENTION_SUMMARY, rows_from_run

    summary = _script().main([str(run_dir), "--limit", "20", "--num-maps", "0"])
    assert Path(summary["npz"]) == run_dir / ATTENTION_SUMMARY.with_suffix(".npz")
    assert len(summary["attention_on_clutter_per_step"]) == 8
    assert summary["attention_on_clutter"] == pytest.approx(
        np.mean(summary["attention_on_clutter_per_step"])
    )
    rows = {r["protocol"]: r for r in rows_from_run(run_dir)}
    assert rows["single-mean"]["attention_in_box"] == f"{summary['attention_in_box']:.3f}"
    assert rows["single-mean"]["attention_on_clutter"] == f"{summary['attention_on_clutter']:.3f}"
    assert rows["single-sampled"]["attention_in_box"] == ""


def test_export_refuses_a_folder_that_is_not_a_run(tmp_path):
    with pytest.raises(ValueError, match="not a run folder"):
        _script().main([str(tmp_path)])


@pytest.fixture(scope="module")
def soft_runs(tmp_path_factory, data_root):
    from soft_baselines.train import SoftTrainConfig, train_soft

    root = tmp_path_factory.mktemp("soft_maps")
    for module in ("cbam", "se"):
        cfg = SoftTrainConfig(
            module=module,
            dataset="cluttered60",
            widths=(8, 16),
            insert_after=("stage2",),
            epochs=1,
            batch_size=16,
            max_batches_per_epoch=2,
            val_size=200,
            train_limit=64,
            eval_limit=40,
            eval_batch_size=40,
            log_images=0,
            data_root=str(data_root),
            runs_root=str(root),
            run_name=module,
            device="cpu",
        )
        train_soft(cfg)
    return root


def test_soft_run_exports_the_module_map_beside_grad_cam(soft_runs, tmp_path):
    import torch

    from glimpse.attention import mass_in_boxes

    out = tmp_path / "soft.npz"
    summary = _script().main(
        [str(soft_runs / "cbam"), "--limit", "12", "--num-maps", "4", "--out", str(out)]
    )
    z = np.load(out)
    for kind in ("gradcam", "module"):
        assert z[f"{kind}_maps"].shape == (4, 60, 60)
        assert np.allclose(z[f"{kind}_maps"].sum(axis=(1, 2)), 1.0, atol=1e-5)
        assert z[f"{kind}_mass_in_box"].shape == (12,) and z[f"{kind}_pointing"].shape == (12,)
        assert z[f"{kind}_mass_on_clutter"].shape == (12,)
        assert summary[f"{kind}_in_box"] == pytest.approx(float(z[f"{kind}_mass_in_box"].mean()))
    assert "fixations" not in z and z["boxes"].shape == (12, 4)
    assert z["labels"].shape == (12, 1) and z["predictions"].shape == (12, 1)
    # the stored maps' scores, recomputed from the maps and boxes
    mass = mass_in_boxes(
        torch.from_numpy(z["module_maps"]).double(), torch.from_numpy(z["boxes"][:4]).double()
    )
    assert np.allclose(mass.numpy(), z["module_mass_in_box"][:4], atol=1e-5)
    assert summary["module_map"] and summary["attention_map"] == "module"
    assert summary["attention_in_box"] == summary["module_in_box"]


def test_soft_run_without_a_spatial_map_exports_grad_cam_only(soft_runs, tmp_path):
    out = tmp_path / "se.npz"
    summary = _script().main([str(soft_runs / "se"), "--limit", "6", "--out", str(out)])
    z = np.load(out)
    assert z["gradcam_maps"].shape == (6, 60, 60)
    assert not any(k.startswith("module_") for k in z.files)
    assert not summary["module_map"] and summary["attention_map"] == "gradcam"
    assert summary["attention_in_box"] == summary["gradcam_in_box"]


def test_side_by_side_figure_of_a_hard_and_a_soft_run(run_dir, soft_runs, tmp_path):
    """One row per export, the same images; refused for exports of other images. The soft
    export covers the first 20 test images (not all 10k: Grad-CAM over the whole split was
    most of this test's time), fewer than the hard one's 40: only the drawn ones must match."""
    from PIL import Image

    from glimpse.experiments.attention_maps import attention_figure

    hard = tmp_path / "hard.npz"
    soft = tmp_path / "soft.npz"
    _script().main([str(run_dir), "--limit", "40", "--num-maps", "4", "--out", str(hard)])
    _script().main(
        [str(soft_runs / "cbam"), "--limit", "20", "--num-maps", "4", "--out", str(soft)]
    )
    png = attention_figure([hard, soft], tmp_path / "fig.png", ["RAM", "CBAM"], num_images=4)
    img = np.asarray(Image.open(png))
    assert img.shape == (2 * (60 * 3 + 2 + 14), 4 * (60 * 3 + 2), 3)
    # the maps are drawn: tinted pixels (orange, not grey) in both rows
    rows = np.split(img, 2, axis=0)
    for row in rows:
        tinted = (row[..., 0].astype(int) - row[..., 2].astype(int)) > 40
        assert tinted.mean() > 0.001
    other = tmp_path / "other.npz"  # the soft export with other labels: other images
    z = dict(np.load(soft))
    z["labels"] = (z["labels"] + 1) % 10
    np.savez(other, **z)
    other.with_suffix(".json").write_text(soft.with_suffix(".json").read_text())
    with pytest.raises(ValueError, match="not the same images"):
        attention_figure([hard, other], tmp_path / "bad.png")
