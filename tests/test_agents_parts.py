"""``agents.parts``, the FCAN-style parts agent (Liu et al. 2016): greedy reward, geometry,
rollouts and prediction, learning on the two-digit proxy.
"""

from __future__ import annotations

import math

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
from envs import PART_TASKS, GlimpseVectorEnv, ImageSource, MDPConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")


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


# ------------------------------------------------------------------ learning
def test_parts_agent_learns_the_two_digit_proxy(data_root):
    """Chance is 1%; a few hundred updates on a subset already beat 4% on held-out images.

    Measured 2026-12-02 (load ~6 on the 2 cores; seeds s for both ``manual_seed`` and
    the env's reset): after 170 updates seeds 0/1/2 reach 9.2/7.6/9.2%; after 140,
    7.4/4.8/9.6%, too close to the bar for a cheaper budget (and seed 0 reads 3.0% at
    120: held-out accuracy of 500 images over 100 classes is noisy)."""
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
