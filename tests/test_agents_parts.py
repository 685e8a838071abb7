"""The FCAN-style parts agent (Liu et al. 2016): greedy reward, geometry, part-hit metrics,
the CUB pipeline on the generated fixture, learning on the two-digit proxy, the script."""

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
    cell_locations,
    collect_parts_rollout,
    combine_logits,
    greedy_rewards,
    parts_loss,
    predict_parts,
)
from agents.parts_train import PartsTrainConfig, build_parts_envs, evaluate_parts, train_parts
from envs import PART_TASKS, GlimpseVectorEnv, ImageSource, MDPConfig
from glimpse.parts_metrics import digit_hits, digits_covered, hit_summary, part_hits
from tests.helpers.cub import make_tiny_cub

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REPO = __import__("pathlib").Path(__file__).resolve().parent.parent


# ----------------------------------------------------------------- greedy reward
def test_greedy_reward_matches_a_hand_computed_example():
    log = torch.tensor
    whole = log([[0.5, 0.3, 0.2]]).log()
    step1 = log([[[0.2, 0.6, 0.2], [0.6, 0.2, 0.2]]]).log()  # (B=1, K=2, C=3)
    step2 = torch.full((1, 2, 3), 1 / 3).log()  # uninformative parts
    parts = torch.stack([step1, step2])  # (S=2, B, K, C)
    labels = torch.tensor([0])
    # c0 = 0.5. Part 0 added: 0.5*0.2 / (0.1 + 0.18 + 0.04) = 0.3125; part 1 added:
    # 0.3 / (0.3 + 0.06 + 0.04) = 0.75. After step 1 (both parts): 0.06 / 0.104.
    c1 = 0.06 / 0.104
    delta = greedy_rewards(whole, parts, labels, "delta")
    torch.testing.assert_close(delta[0, 0], torch.tensor([0.3125 - 0.5, 0.75 - 0.5]))
    torch.testing.assert_close(delta[1, 0], torch.zeros(2), atol=1e-6, rtol=0)
    ind = greedy_rewards(whole, parts, labels, "indicator")
    assert ind[0, 0].tolist() == [0.0, 1.0]  # part 0 makes class 1 win; part 1 helps
    assert ind[1, 0].tolist() == [0.0, 0.0]  # right, but the confidence does not rise
    combined = combine_logits(whole, [step1]).softmax(-1)
    assert math.isclose(combined[0, 0].item(), c1, rel_tol=1e-5)
    # Step scope: both parts of step 1 share the joint gain c1 - c0; with both the
    # prediction is right (0.06 > 0.036 > 0.008).
    joint = greedy_rewards(whole, parts, labels, "delta", "step")
    torch.testing.assert_close(joint[0, 0], torch.full((2,), c1 - 0.5))
    assert greedy_rewards(whole, parts, labels, "indicator", "step")[0, 0].tolist() == [1, 1]
    with pytest.raises(ValueError, match="reward mode"):
        greedy_rewards(whole, parts, labels, "bogus")
    with pytest.raises(ValueError, match="reward scope"):
        greedy_rewards(whole, parts, labels, "delta", "bogus")


def test_cell_locations_are_cell_centres_row_major():
    got = cell_locations(2, 2)
    assert got.tolist() == [[-0.5, -0.5], [0.5, -0.5], [-0.5, 0.5], [0.5, 0.5]]
    # A 10x20 image is padded to a centred 20x20 square in the context view: the view's
    # y = +-0.5 is the image's y = +-1.
    wide = cell_locations(2, 2, image_hw=(10, 20))
    assert wide.tolist() == [[-0.5, -1.0], [0.5, -1.0], [-0.5, 1.0], [0.5, 1.0]]


# --------------------------------------------------------------------- part hits
def test_part_hits_against_hand_computed_distances():
    loc = torch.tensor([[[0.0, 0.0], [-0.9, -0.9]]])  # pixels (50, 50) and (5, 5)
    box = torch.tensor([[40.0, 40.0, 60.0, 80.0]])  # longer side 40 -> radius 10 px
    parts = torch.tensor([[[50.0, 61.0, 1.0], [5.0, 5.0, 0.0], [55.0, 55.0, 1.0]]])
    hits = part_hits(loc, parts, box, (100, 100), radius=0.25)
    assert hits.tolist() == [[True, False]]  # 7.07 px from a visible part; (5, 5) invisible
    parts[0, 2, 2] = 0.0  # hide the near part: 11 px from (50, 61) is a miss
    assert part_hits(loc, parts, box, (100, 100), 0.25).tolist() == [[False, False]]
    assert part_hits(loc, parts, box, (100, 100), 0.3).tolist() == [[True, False]]
    with pytest.raises(ValueError, match="radius"):
        part_hits(loc, parts, box, (100, 100), 0.0)


def test_digit_hits_and_coverage():
    boxes = torch.tensor([[[0.0, 0.0, 28.0, 28.0], [50.0, 50.0, 78.0, 78.0]]] * 2)
    loc = torch.tensor(
        [[[-0.8, -0.8], [0.0, 0.0]], [[-0.8, -0.8], [0.9, -0.9]]]
    )  # pixels (10, 10) & (50, 50) [on the edge]; (10, 10) & (95, 5)
    assert digit_hits(loc, boxes, (100, 100)).tolist() == [[True, True], [True, False]]
    assert digits_covered(loc, boxes, (100, 100)).tolist() == [True, False]
    s = hit_summary(digit_hits(loc, boxes, (100, 100)))
    assert s == {"part_hit": 0.75, "part_hit/0": 1.0, "part_hit/1": 0.5}


# ------------------------------------------------------------------- the agent
def _tiny_parts_env(n: int = 8, classes: int = 5) -> GlimpseVectorEnv:
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 1, 24, 24), generator=gen, dtype=torch.uint8)
    labels = torch.randint(0, classes, (n,), generator=gen)
    cfg = MDPConfig(
        glimpse_size=8,
        num_glimpses=3,
        num_classes=classes,
        num_parts=2,
        context_size=12,
        num_scales=2,
    )
    return GlimpseVectorEnv((images, labels), 4, cfg, shuffle=False)


def test_rollout_shapes_gradients_and_env_reward():
    venv = _tiny_parts_env()
    net = PartsNet((1, 12, 12), (2, 2, 1, 8, 8), 5, steps=2)
    venv.reset(seed=0)
    ro = collect_parts_rollout(net, venv, generator=torch.Generator().manual_seed(1))
    assert ro.part_logits.shape == (2, 4, 2, 5) and ro.locations.shape == (2, 4, 2, 2)
    assert ro.log_probs.shape == (2, 4, 2)
    # The locations are centres of the 6x6 score map's cells.
    centres = cell_locations(6, 6)
    assert all((centres == loc).all(1).any() for loc in ro.locations.reshape(-1, 2))
    # The env paid exactly the submitted combined prediction.
    assert ro.env_reward.tolist() == (ro.predictions == ro.labels).float().tolist()
    loss, metrics = parts_loss(ro)
    loss.backward()
    assert net.attention.weight.grad is not None
    assert net.attention.weight.grad.abs().sum() > 0
    assert net.part_heads[1].weight.grad.abs().sum() > 0
    assert metrics["losses/entropy"] == pytest.approx(math.log(36), rel=1e-4)  # uniform start


def test_agent_rejects_an_env_of_another_shape():
    venv = _tiny_parts_env()
    net = PartsNet((1, 12, 12), (2, 2, 1, 8, 8), 5, steps=1)  # env has 2 steps
    with pytest.raises(ValueError, match="steps"):
        collect_parts_rollout(net, venv)
    with pytest.raises(ValueError, match="backbone"):
        PartsNet((1, 12, 12), (2, 2, 1, 8, 8), 5, backbone="vgg")


def test_deterministic_prediction_is_reproducible():
    venv = _tiny_parts_env()
    net = PartsNet((1, 12, 12), (2, 2, 1, 8, 8), 5, steps=2)
    a, ro_a = predict_parts(net, venv, torch.arange(3))
    b, ro_b = predict_parts(net, venv, torch.arange(3))
    assert a.shape == (3,) and torch.equal(a, b)
    assert torch.equal(ro_a.locations, ro_b.locations)


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


# ------------------------------------------------------------------ learning
def test_parts_agent_learns_the_two_digit_proxy(data_root):
    """Chance is 1%; a few hundred updates on a subset already beat 4% on held-out images."""
    torch.manual_seed(0)
    kw = {k: v for k, v in PART_TASKS["Glimpse/TwoDigitParts-v0"].items() if k != "source"}
    cfg = MDPConfig(**kw)
    src = ImageSource.from_any("twodigit100", "train", data_root, "cpu", {"limit": 12000})
    held = ImageSource.from_any("twodigit100", "val", data_root, "cpu", {"limit": 500})
    venv = GlimpseVectorEnv(src, 64, cfg)
    venv.reset(seed=0)
    space = venv.single_observation_space
    net = PartsNet(space["context"].shape, space["glimpse"].shape, 100)
    opt = torch.optim.Adam(net.parameters(), 2e-3)
    for _ in range(170):
        loss, _ = parts_loss(collect_parts_rollout(net, venv))
        opt.zero_grad()
        loss.backward()
        opt.step()
    evaluator = GlimpseVectorEnv(held, 500, cfg, shuffle=False)
    preds, _ = predict_parts(net, evaluator, torch.arange(500))
    accuracy = (preds == held.labels).float().mean().item()
    assert accuracy > 0.04, accuracy


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
    make_tiny_cub(tmp_path / "cub", num_classes=2, images_per_class=4)
    common = ["--epochs", "1", "--runs-root", str(tmp_path / "runs"), "--threads", "1"]
    res = script.main(
        [
            *("--dataset", "cub", "--data-root", str(tmp_path / "cub"), "--run-name", "c"),
            *("--image-size", "48", "--context-size", "32", "--glimpse-size", "16"),
            *("--backbone", "small", "--batch-size", "2", *common),
        ]
    )
    assert 0.0 <= res["test_accuracy"] <= 1.0
    res = script.main(
        [
            *("--dataset", "proxy", "--data-root", str(data_root), "--run-name", "p"),
            *("--train-limit", "64", "--eval-limit", "32", "--batch-size", "32"),
            *("--val-size", "100", *common),
        ]
    )
    assert {"test_part_hit", "test_digits_covered"} <= set(res["details"])
