"""``agents.parts_train``: the parts trainer on the generated CUB fixture (end to end,
resume) and its script.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from agents.parts import (
    PartsNet,
)
from agents.parts_train import PartsTrainConfig, build_parts_envs, evaluate_parts, train_parts
from tests.helpers.cub import make_tiny_cub

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REPO = __import__("pathlib").Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------- CUB
def _cub_cfg(tmp_path, cub_root, **kw) -> PartsTrainConfig:
    base = dict(
        dataset="cub",
        data_root=str(cub_root),
        image_size=96,
        context_size=64,
        glimpse_size=24,
        backbone="resnet18",
        epochs=1,
        batch_size=2,
        eval_batch_size=4,
        playback=2,
        runs_root=str(tmp_path / "runs"),
        run_name="cub",
        device="cpu",
        hit_radius=0.3,
    )
    return PartsTrainConfig(**{**base, **kw})


def test_cub_pipeline_end_to_end_with_hand_checked_part_hits(tmp_path):
    cub = make_tiny_cub(tmp_path / "data", num_classes=3, images_per_class=4)
    cfg = _cub_cfg(tmp_path, tmp_path / "data")
    result = train_parts(cfg)
    saved = json.loads((tmp_path / "runs" / "cub" / "metrics.json").read_text())
    assert saved["test_accuracy"] == result["test_accuracy"]
    assert {"test_part_hit", "test_part_hit/0", "test_part_hit/1"} <= set(saved["details"])
    assert (tmp_path / "runs" / "cub" / "best.pt").exists()
    # Hand check of the metric on the test split against the fixture's own annotations.
    cfg = cfg.resolved()
    _, evals, parts = build_parts_envs(cfg, torch.device("cpu"))
    venv = evals["test"]
    net = PartsNet(
        venv.single_observation_space["context"].shape,
        venv.single_observation_space["glimpse"].shape,
        venv.config.num_classes,
        backbone="resnet18",
    )
    metrics, locs = evaluate_parts(net, venv, cfg, parts["test"])
    test_rows = [i - 1 for i in cub.ids(train=False)]
    assert len(locs) == len(test_rows)
    s = cfg.image_size
    hits = []
    for row, chosen in zip(test_rows, locs.numpy(), strict=True):
        w, h = cub.sizes[row]
        _, _, bw, bh = cub.boxes_xywh[row]
        radius = cfg.hit_radius * max(bw * s / w, bh * s / h)
        for lx, ly in chosen:
            px, py = (lx + 1) / 2 * s, (ly + 1) / 2 * s
            hits.append(
                any(
                    v > 0 and math.hypot(px - ax * s / w, py - ay * s / h) <= radius + 1e-4
                    for ax, ay, v in cub.parts[row]
                )
            )
    assert metrics["part_hit"] == pytest.approx(float(np.mean(hits)), abs=1e-6)


def test_cub_run_resumes(tmp_path):
    make_tiny_cub(tmp_path / "data", num_classes=2, images_per_class=4)
    train_parts(
        _cub_cfg(tmp_path, tmp_path / "data", backbone="small", image_size=48, context_size=32)
    )
    more = _cub_cfg(
        tmp_path, tmp_path / "data", backbone="small", image_size=48, context_size=32, epochs=2
    )
    result = train_parts(PartsTrainConfig(**{**more.__dict__, "resume": True}))
    # 4 training images, 1 held out for val: one batch of 2 per epoch; epoch 2 only was run.
    assert result["images_seen"] == 2 * 1 * 2
    assert result["train_seconds_this_session"] > 0


# -------------------------------------------------------------------- script
def test_script_help():
    out = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "train_parts.py"), "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "--dataset" in out.stdout and "--hit-radius" in out.stdout


def test_script_tiny_runs_on_cub_layout_and_proxy(tmp_path, data_root):
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import train_parts as script
    finally:
        sys.path.pop(0)
    cub = make_tiny_cub(tmp_path / "cub", num_classes=2, images_per_class=4)
    common = ["--epochs", "1", "--runs-root", str(tmp_path / "runs"), "--threads", "1"]
    res = script.main(
        [
            *("--dataset", "cub", "--data-root", str(tmp_path / "cub"), "--run-name", "c"),
            *("--image-size", "48", "--context-size", "32", "--glimpse-size", "16"),
            *("--backbone", "small", "--batch-size", "2", *common),
        ]
    )
    n_test = int((~torch.as_tensor(cub.is_train, dtype=torch.bool)).sum())
    right = res["test_accuracy"] * n_test  # a count over the fixture's test images
    assert abs(right - round(right)) < 1e-3 and res["protocol"] == "deterministic"
    assert json.loads((tmp_path / "runs" / "c" / "metrics.json").read_text()) == res
    res = script.main(
        [
            *("--dataset", "proxy", "--data-root", str(data_root), "--run-name", "p"),
            *("--train-limit", "64", "--eval-limit", "32", "--batch-size", "32"),
            *("--val-size", "100", *common),
        ]
    )
    assert {"test_part_hit", "test_digits_covered"} <= set(res["details"])
