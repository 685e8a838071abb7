"""Tests for envs.core.GlimpseMDP: the one batched engine that holds all episode logic.

Small in-memory images throughout; the dataset never matters here.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from envs.core import ActionError, GlimpseMDP, MDPConfig
from glimpse.retina import foveate

B = 3


def make_images(b: int = B, c: int = 1, h: int = 20, w: int = 24, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, c, h, w, generator=torch.Generator().manual_seed(seed))


def make_mdp(b: int = B, labels=None, images=None, **cfg) -> GlimpseMDP:
    cfg.setdefault("num_glimpses", 3)
    config = MDPConfig(**cfg)
    mdp = GlimpseMDP(config, b)
    if labels is None:
        labels = torch.arange(b * config.num_targets).reshape(b, -1) % config.num_classes
    mdp.reset(make_images(b) if images is None else images, torch.as_tensor(labels))
    return mdp


def zeros_loc(b: int = B) -> torch.Tensor:
    return torch.zeros(b, 2)


def labels_of(*values: int) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.long)


def state(mdp: GlimpseMDP) -> dict[str, torch.Tensor]:
    """Every piece of episode state, cloned."""
    names = (
        "loc",
        "history",
        "num_fixations",
        "glimpses_this_target",
        "target",
        "done",
        "labels",
        "predictions",
        "images",
    )
    out = {n: getattr(mdp, n).clone() for n in names}
    out["table"] = mdp._integral.table.clone()
    return out


def assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"state {k!r} changed"


def run_episode(mdp: GlimpseMDP, label: torch.Tensor) -> list:
    """Step with centre locations and ``label`` until every slot has terminated."""
    results = []
    while not bool(mdp.done.all()):
        results.append(mdp.step(zeros_loc(mdp.batch_size), label))
        assert len(results) <= mdp.config.max_steps
    return results


# ------------------------------------------------------------------ config


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_glimpses": 0}, "num_glimpses"),
        ({"num_classes": 1}, "num_classes"),
        ({"num_targets": 1.5}, "num_targets"),
        ({"init_location": "corner"}, "init_location"),
        ({"max_step": 0.0}, "max_step"),
        ({"step_reward": float("nan")}, "step_reward"),
        ({"glimpse_size": 0}, "glimpse_size"),
    ],
)
def test_config_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MDPConfig(**kwargs)


def test_config_derived_quantities():
    cfg = MDPConfig(num_glimpses=4, num_targets=3, relative=True, max_step=0.25)
    assert cfg.max_steps == 12
    assert cfg.location_bound == 0.25
    assert MDPConfig().location_bound == 1.0


# ------------------------------------------------------------------ reward and length


def test_reward_is_one_for_correct_and_zero_for_wrong_classification():
    mdp = make_mdp(labels=[4, 7, 2])
    for _ in range(2):  # T - 1 moves: nothing is classified, reward 0
        res = mdp.step(zeros_loc(), labels_of(4, 4, 4))
        assert not res.classified.any() and not res.terminated.any()
        assert torch.equal(res.reward, torch.zeros(B))
        assert torch.equal(res.prediction, torch.full((B,), -1))
    res = mdp.step(zeros_loc(), labels_of(4, 4, 2))
    assert res.reward.dtype == torch.float32
    assert res.reward.tolist() == [1.0, 0.0, 1.0]
    assert res.correct.tolist() == [True, False, True]
    assert res.prediction.tolist() == [4, 4, 2]
    assert res.classified.all() and res.terminated.all()
    assert mdp.predictions[:, 0].tolist() == [4, 4, 2]


@pytest.mark.parametrize("num_glimpses", [1, 2, 6])
def test_episode_has_exactly_T_steps_and_T_glimpses(num_glimpses):
    mdp = make_mdp(num_glimpses=num_glimpses)
    steps = []
    for t in range(num_glimpses):
        res = mdp.step(torch.full((B, 2), 0.1 * t), labels_of(0, 1, 2))
        steps.append(res)
        assert bool(res.terminated.all()) == (t == num_glimpses - 1)
    assert mdp.done.all()
    assert mdp.num_fixations.tolist() == [num_glimpses] * B
    assert mdp.trajectory(0).shape == (num_glimpses, 2)
    # The observed step counter reaches 1 exactly on the last glimpse.
    torch.testing.assert_close(steps[-1].obs["step"], torch.ones(B, 1))


def test_step_counter_in_observation():
    mdp = make_mdp(num_glimpses=4)
    torch.testing.assert_close(mdp.observe()["step"], torch.full((B, 1), 0.25))
    res = mdp.step(zeros_loc())
    torch.testing.assert_close(res.obs["step"], torch.full((B, 1), 0.5))


def test_location_of_the_final_step_is_unused():
    a, b = make_mdp(), make_mdp()
    for mdp in (a, b):
        for t in range(2):
            mdp.step(torch.full((B, 2), 0.3 * t - 0.2), labels_of(0, 0, 0))
    ra = a.step(torch.full((B, 2), -0.9), labels_of(0, 1, 2))
    rb = b.step(torch.full((B, 2), 0.9), labels_of(0, 1, 2))
    assert ra.terminated.all() and rb.terminated.all()
    for k in ra.obs:
        assert torch.equal(ra.obs[k], rb.obs[k])
    assert torch.equal(a.loc, b.loc)
    assert torch.equal(a.trajectory(1), b.trajectory(1))
    torch.testing.assert_close(a.loc, torch.full((B, 2), 0.1))


def test_history_records_every_fixation():
    mdp = make_mdp(init_location="center")
    moves = [torch.tensor([[0.5, -0.5]] * B), torch.tensor([[-0.25, 0.75]] * B)]
    for m in moves:
        mdp.step(m)
    expected = torch.tensor([[0.0, 0.0], [0.5, -0.5], [-0.25, 0.75]])
    torch.testing.assert_close(mdp.trajectory(2), expected)


def test_observation_glimpse_is_the_retina_of_the_image_at_the_location():
    """The env is the only path to pixels: its glimpse is exactly ``foveate``'s."""
    images = make_images(c=2, h=30, w=44, seed=3)
    mdp = make_mdp(images=images, glimpse_size=5, num_scales=3, scale_factor=1.5, num_glimpses=4)
    gen = torch.Generator().manual_seed(1)
    for _ in range(3):
        loc = torch.rand(B, 2, generator=gen) * 2 - 1
        obs = mdp.step(loc).obs
        assert obs["glimpse"].shape == (B, 3, 2, 5, 5) and obs["glimpse"].dtype == torch.float32
        torch.testing.assert_close(obs["location"], loc)
        torch.testing.assert_close(
            obs["glimpse"], foveate(images, loc, 5, 3, 1.5), rtol=1e-5, atol=1e-6
        )


def test_observation_glimpse_lies_in_the_unit_interval():
    """Zero regions through the integral image must not give tiny negative values."""
    images = torch.zeros(B, 1, 60, 60)
    images[:, :, 20:40, 20:40] = torch.rand(
        B, 1, 20, 20, generator=torch.Generator().manual_seed(0)
    )
    mdp = make_mdp(images=images, glimpse_size=12, num_scales=3, num_glimpses=8)
    gen = torch.Generator().manual_seed(0)
    for _ in range(7):
        g = mdp.step(torch.rand(B, 2, generator=gen) * 2 - 1).obs["glimpse"]
        assert g.min() >= 0.0 and g.max() <= 1.0


def test_observation_returns_copies_of_state():
    mdp = make_mdp()
    obs = mdp.observe()
    obs["location"] += 5.0
    assert mdp.loc.abs().max() <= 1.0


# ------------------------------------------------------------------ locations


def test_reset_initial_locations_center_random_and_given():
    assert torch.equal(make_mdp(init_location="center").loc, torch.zeros(B, 2))
    cfg = MDPConfig(init_location="random")
    locs = []
    for _ in range(2):
        mdp = GlimpseMDP(cfg, B)
        mdp.reset(make_images(), labels_of(0, 1, 2), generator=torch.Generator().manual_seed(5))
        locs.append(mdp.loc.clone())
    assert torch.equal(locs[0], locs[1])  # same generator seed, same locations
    assert locs[0].abs().max() <= 1 and locs[0].std() > 0
    given = torch.tensor([[0.5, -0.5], [1.0, 1.0], [-1.0, 0.0]])
    mdp = GlimpseMDP(cfg, B)
    obs = mdp.reset(make_images(), labels_of(0, 1, 2), init_loc=given)
    assert torch.equal(obs["location"], given)


def test_relative_moves_accumulate_and_are_clipped_to_the_unit_square():
    mdp = make_mdp(relative=True, max_step=0.5, num_glimpses=5)
    move = torch.tensor([[0.5, 0.5], [-0.5, 0.25], [0.0, -0.5]])
    seen = []
    for _ in range(3):
        seen.append(mdp.step(move).obs["location"])
    torch.testing.assert_close(seen[0], move)
    torch.testing.assert_close(seen[1], (2 * move).clamp(-1, 1))
    torch.testing.assert_close(seen[2], torch.tensor([[1.0, 1.0], [-1.0, 0.75], [0.0, -1.0]]))
    # Moving back from the clipped border starts from the border, not from the overshoot.
    back = mdp.step(-move).obs["location"]
    torch.testing.assert_close(back, torch.tensor([[0.5, 0.5], [-0.5, 0.5], [0.0, -0.5]]))


def test_relative_moves_are_bounded_by_max_step():
    mdp = make_mdp(relative=True, max_step=0.25)
    before = state(mdp)
    with pytest.raises(ActionError, match=r"\[-0.25, 0.25\]\^2 \(relative move\).*0.3"):
        mdp.step(torch.tensor([[0.0, 0.0], [0.3, 0.0], [0.0, 0.0]]))
    assert_same_state(before, state(mdp))
    mdp.step(torch.full((B, 2), 0.25))  # the bound itself is allowed
    torch.testing.assert_close(mdp.loc, torch.full((B, 2), 0.25))


def test_clip_actions_clips_absolute_locations_instead_of_raising():
    mdp = make_mdp(clip_actions=True)
    obs = mdp.step(torch.tensor([[1.5, -3.0], [0.2, 0.3], [-1.01, 1.01]])).obs
    torch.testing.assert_close(
        obs["location"], torch.tensor([[1.0, -1.0], [0.2, 0.3], [-1.0, 1.0]])
    )


def test_clip_actions_clips_relative_moves_to_max_step():
    mdp = make_mdp(clip_actions=True, relative=True, max_step=0.5)
    obs = mdp.step(torch.tensor([[0.9, -0.9], [0.1, 0.0], [-2.0, 0.5]])).obs
    torch.testing.assert_close(
        obs["location"], torch.tensor([[0.5, -0.5], [0.1, 0.0], [-0.5, 0.5]])
    )


def test_clip_actions_still_rejects_non_finite_locations():
    mdp = make_mdp(clip_actions=True)
    with pytest.raises(ActionError, match="finite"):
        mdp.step(torch.tensor([[0.0, 0.0], [float("inf"), 0.0], [0.0, 0.0]]))


# ------------------------------------------------------------------ shaping and early stop


def test_step_reward_is_paid_on_every_non_classifying_step():
    mdp = make_mdp(step_reward=-0.05, labels=[1, 2, 3])
    rewards = [r.reward for r in run_episode(mdp, labels_of(1, 0, 3))]
    assert len(rewards) == 3
    for r in rewards[:-1]:
        torch.testing.assert_close(r, torch.full((B,), -0.05))
    assert rewards[-1].tolist() == [1.0, 0.0, 1.0]


def test_step_reward_is_off_by_default():
    mdp = make_mdp()
    assert MDPConfig().step_reward == 0.0
    assert torch.equal(mdp.step(zeros_loc()).reward, torch.zeros(B))


def test_early_stop_classifies_now_and_ends_the_episode():
    mdp = make_mdp(early_stop=True, num_glimpses=4, labels=[5, 6, 7])
    res = mdp.step(zeros_loc(), labels_of(0, 0, 0), torch.tensor([False, False, False]))
    assert not res.classified.any()
    res = mdp.step(zeros_loc(), labels_of(5, 0, 0), torch.tensor([True, False, True]))
    assert res.classified.tolist() == [True, False, True]
    assert res.terminated.tolist() == [True, False, True]
    assert res.reward.tolist() == [1.0, 0.0, 0.0]
    assert mdp.num_fixations.tolist() == [2, 3, 2]
    # The ended episodes may not step again; the running one still classifies after T.
    with pytest.raises(ActionError, match="episode 0 has ended"):
        mdp.step(zeros_loc(), labels_of(0, 6, 0))
    active = torch.tensor([False, True, False])
    mdp.step(zeros_loc(), labels_of(0, 6, 0), active=active)
    res = mdp.step(zeros_loc(), labels_of(0, 6, 0), active=active)
    assert res.terminated.tolist() == [False, True, False]
    assert res.reward.tolist() == [0.0, 1.0, 0.0]
    assert mdp.done.all()


def test_stop_without_early_stop_raises_and_changes_nothing():
    mdp = make_mdp()
    before = state(mdp)
    with pytest.raises(ActionError, match="early_stop=False"):
        mdp.step(zeros_loc(), labels_of(0, 0, 0), torch.tensor([False, True, False]))
    assert_same_state(before, state(mdp))


def test_stop_must_be_boolean_like():
    mdp = make_mdp(early_stop=True)
    with pytest.raises(ActionError, match=r"stop must be 0/1.*0.5"):
        mdp.step(zeros_loc(), labels_of(0, 0, 0), torch.tensor([0.0, 0.5, 0.0]))
    with pytest.raises(ActionError, match=r"stop must be 0/1.*2"):
        mdp.step(zeros_loc(), labels_of(0, 0, 0), torch.tensor([0, 2, 0]))


# ------------------------------------------------------------------ several targets (DRAM)


def test_multi_target_classifies_after_every_T_glimpses_with_reward_per_digit():
    labels = torch.tensor([[3, 8], [1, 1], [0, 9]])
    mdp = make_mdp(num_targets=2, num_glimpses=2, labels=labels)
    assert mdp.config.max_steps == 4
    guess = labels_of(3, 1, 9)
    # Step 1 moves; step 2 classifies target 0 and moves on to target 1.
    r1 = mdp.step(torch.full((B, 2), 0.5), guess)
    assert not r1.classified.any()
    r2 = mdp.step(torch.full((B, 2), -0.5), guess)
    assert r2.classified.all() and not r2.terminated.any()
    assert r2.target.tolist() == [0, 0, 0]
    assert r2.reward.tolist() == [1.0, 1.0, 0.0]
    # The classifying step's location is used: target 1 starts there.
    torch.testing.assert_close(r2.obs["location"], torch.full((B, 2), -0.5))
    assert mdp.target.tolist() == [1, 1, 1]
    torch.testing.assert_close(r2.obs["step"], torch.full((B, 1), 0.75))
    # Step 3 moves; step 4 classifies target 1 and ends the episode.
    r3 = mdp.step(zeros_loc(), guess)
    assert not r3.classified.any()
    r4 = mdp.step(zeros_loc(), labels_of(8, 0, 9))
    assert r4.classified.all() and r4.terminated.all()
    assert r4.target.tolist() == [1, 1, 1]
    assert r4.reward.tolist() == [1.0, 0.0, 1.0]
    assert mdp.predictions.tolist() == [[3, 8], [1, 0], [9, 9]]
    episode_correct = (mdp.predictions == mdp.labels).float().mean(1)
    assert episode_correct.tolist() == [1.0, 0.5, 0.5]
    assert mdp.trajectory(0).shape == (4, 2)


def test_multi_target_reset_checks_labels_per_episode():
    mdp = GlimpseMDP(MDPConfig(num_targets=2), B)
    with pytest.raises(ValueError, match=r"expected 2 label\(s\) per episode"):
        mdp.reset(make_images(), labels_of(0, 1, 2))


# ------------------------------------------------------------------ active slots and partial reset


def test_inactive_slots_are_untouched_and_their_actions_ignored():
    mdp = make_mdp(step_reward=-0.5)
    before = state(mdp)
    active = torch.tensor([True, False, True])
    loc = torch.tensor([[0.5, 0.5], [float("nan"), 7.0], [-0.5, 0.5]])
    res = mdp.step(loc, labels_of(0, 99, 0), active=active)
    assert res.reward.tolist() == [-0.5, 0.0, -0.5] and not res.classified[1]
    assert torch.equal(mdp.loc[1], before["loc"][1])
    assert mdp.num_fixations.tolist() == [2, 1, 2]


def test_partial_reset_replaces_only_the_given_slots():
    mdp = make_mdp()
    for _ in range(3):
        mdp.step(torch.full((B, 2), 0.5), labels_of(0, 1, 2))
    assert mdp.done.all()
    new = make_images(1, seed=9)
    obs = mdp.reset(new, labels_of(7), index=torch.tensor([1]), init_loc=torch.tensor([[0.1, 0.2]]))
    assert mdp.done.tolist() == [True, False, True]
    assert mdp.labels[:, 0].tolist() == [0, 7, 2]
    assert torch.equal(mdp.images[1], new[0])
    assert mdp.num_fixations.tolist() == [3, 1, 3]
    torch.testing.assert_close(obs["glimpse"][1:2], foveate(new, torch.tensor([[0.1, 0.2]]), 8))


# ------------------------------------------------------------------ bad input


def _bad_steps():
    ok_loc, ok_lab = zeros_loc(), labels_of(0, 1, 2)
    nan = ok_loc.clone()
    nan[1, 0] = float("nan")
    inf = ok_loc.clone()
    inf[2, 1] = float("-inf")
    far = ok_loc.clone()
    far[0] = torch.tensor([0.0, 1.25])
    return [
        ("nan", (nan, ok_lab), r"finite, got NaN/inf at index 1: \[nan, 0.0\]"),
        ("inf", (inf, ok_lab), r"finite, got NaN/inf at index 2: \[0.0, -inf\]"),
        ("range", (far, ok_lab), r"\[-1, 1\]\^2, got index 0: \[0.0, 1.25\].*clip_actions"),
        (
            "loc-shape",
            (torch.zeros(B, 3), ok_lab),
            r"location must have shape \(3, 2\), got \(3, 3\)",
        ),
        ("loc-batch", (torch.zeros(B + 1, 2), ok_lab), r"shape \(3, 2\), got \(4, 2\)"),
        (
            "loc-dtype",
            (torch.zeros(B, 2, dtype=torch.long), ok_lab),
            "floating point, got dtype torch.int64",
        ),
        ("label-shape", (ok_loc, labels_of(0, 1)), r"label must have shape \(3,\), got \(2,\)"),
        ("label-float", (ok_loc, torch.zeros(B)), "integer class index, got dtype torch.float32"),
        ("label-bool", (ok_loc, torch.zeros(B, dtype=torch.bool)), "got dtype torch.bool"),
        ("label-high", (ok_loc, labels_of(0, 10, 2)), r"\[0, 10\), got 10 at index 1"),
        ("label-negative", (ok_loc, labels_of(-1, 1, 2)), r"\[0, 10\), got -1 at index 0"),
        # torch cannot compare these dtypes: NotImplementedError before.
        (
            "label-uint32",
            (ok_loc, torch.tensor([0, 70000, 1], dtype=torch.uint32)),
            r"\[0, 10\), got 70000 at index 1$",
        ),
        (
            "label-uint64-huge",
            (ok_loc, torch.tensor([0, 1, 2**64 - 1], dtype=torch.uint64)),
            r"\[0, 10\), got 18446744073709551615 at index 2$",
        ),
        # Out of range in float64, not "NaN/inf" after a cast to float32.
        (
            "range-float64",
            (torch.tensor([[0.0, 0.0], [1e300, 0.0], [0.0, 0.0]], dtype=torch.float64), ok_lab),
            r"\[-1, 1\]\^2, got index 1: \[1e\+300, 0.0\]",
        ),
        # Broadcast against the batch before (a RuntimeError from torch).
        (
            "stop-shape",
            (ok_loc, ok_lab, torch.zeros(2, dtype=torch.bool)),
            r"^stop must have shape \(3,\), got \(2,\)$",
        ),
    ]


@pytest.mark.parametrize(("name", "args", "match"), _bad_steps(), ids=[b[0] for b in _bad_steps()])
def test_bad_actions_raise_a_clear_error_and_leave_state_unchanged(name, args, match):
    mdp = make_mdp()
    mdp.step(torch.full((B, 2), 0.25), labels_of(0, 0, 0))
    before = state(mdp)
    with pytest.raises(ActionError, match=match):
        mdp.step(*args)
    assert_same_state(before, state(mdp))
    # ... and the MDP still works afterwards.
    assert mdp.step(zeros_loc(), labels_of(0, 1, 2)).obs["glimpse"].shape[0] == B


def test_action_error_is_a_value_error():
    assert issubclass(ActionError, ValueError)


def test_label_is_required_on_a_classifying_step():
    mdp = make_mdp(num_glimpses=1)
    before = state(mdp)
    with pytest.raises(ActionError, match="label is required"):
        mdp.step(zeros_loc())
    assert_same_state(before, state(mdp))


def test_step_after_the_episode_ended_raises_until_reset():
    mdp = make_mdp(num_glimpses=1)
    mdp.step(zeros_loc(), labels_of(0, 1, 2))
    before = state(mdp)
    with pytest.raises(ActionError, match=r"episode 0 has ended; call reset\(\)"):
        mdp.step(zeros_loc(), labels_of(0, 1, 2))
    assert_same_state(before, state(mdp))
    mdp.reset(make_images(seed=1), labels_of(3, 4, 5))
    assert mdp.step(zeros_loc(), labels_of(3, 4, 4)).reward.tolist() == [1.0, 1.0, 0.0]


def test_step_before_reset_raises():
    mdp = GlimpseMDP(MDPConfig(), 2)
    with pytest.raises(RuntimeError, match="reset"):
        mdp.step(torch.zeros(2, 2))


@pytest.mark.parametrize(
    ("init_loc", "match"),
    [
        (
            torch.tensor([[0.0, 0.0], [1.5, 0.0], [0.0, 0.0]]),
            r"init_loc must be finite and in \[-1, 1\]",
        ),
        (torch.tensor([[0.0, 0.0], [float("nan"), 0.0], [0.0, 0.0]]), "init_loc must be finite"),
        (torch.zeros(2, 2), r"init_loc must have shape \(3, 2\), got \(2, 2\)"),
    ],
)
def test_reset_with_a_bad_initial_location_leaves_state_unchanged(init_loc, match):
    mdp = make_mdp()
    mdp.step(torch.full((B, 2), 0.5))
    before = state(mdp)
    with pytest.raises(ValueError, match=match):
        mdp.reset(make_images(seed=7), labels_of(1, 1, 1), init_loc=init_loc)
    assert_same_state(before, state(mdp))


@pytest.mark.parametrize(
    ("images", "labels", "index", "match"),
    [
        (make_images(), labels_of(0, 10, 0), None, r"labels must lie in \[0, 10\)"),
        (make_images(), labels_of(0, -1, 0), None, r"labels must lie in \[0, 10\)"),
        (make_images(B - 1), labels_of(0, 1), None, r"images must be a float \(n=3"),
        ((make_images() * 255).to(torch.uint8), labels_of(0, 1, 2), None, "torch.uint8"),
        (make_images(2, w=10), labels_of(0, 1), [0, 2], r"shape \(n, \*\(1, 20, 24\)\)"),
    ],
)
def test_reset_rejects_bad_images_and_labels(images, labels, index, match):
    mdp = make_mdp()
    before = state(mdp)
    with pytest.raises(ValueError, match=match):
        mdp.reset(images, labels, index=None if index is None else torch.tensor(index))
    assert_same_state(before, state(mdp))


def test_context_observation_is_coarse_view_and_fixed_over_the_episode():
    from glimpse.retina import coarse_view

    gen = torch.Generator().manual_seed(0)
    images = torch.rand(3, 1, 30, 20, generator=gen)
    cfg = MDPConfig(glimpse_size=4, num_glimpses=2, context_size=10)
    core = GlimpseMDP(cfg, 3)
    obs = core.reset(images, torch.tensor([1, 2, 3]))
    torch.testing.assert_close(obs["context"], coarse_view(images, 10).float())
    obs2 = core.step(torch.full((3, 2), 0.3), torch.zeros(3, dtype=torch.long)).obs
    torch.testing.assert_close(obs2["context"], obs["context"])
    new = torch.rand(1, 1, 30, 20, generator=gen)
    obs3 = core.reset(new, torch.tensor([4]), index=torch.tensor([1]))
    torch.testing.assert_close(obs3["context"][1], coarse_view(new, 10)[0].float())
    torch.testing.assert_close(obs3["context"][0], obs["context"][0])
    with pytest.raises(ValueError, match="context_size"):
        MDPConfig(context_size=-1)


def test_index_stream_state_roundtrip_continues_exactly():
    from glimpse.data.source import IndexStream

    a = IndexStream(10, shuffle=True, seed=3)
    a.next(7)
    state = a.state_dict()
    expected = a.next(25)
    b = IndexStream(10, shuffle=True, seed=99)
    b.load_state_dict(state)
    assert torch.equal(b.next(25), expected)
    with pytest.raises(ValueError, match="dataset size"):
        IndexStream(11).load_state_dict(state)


# ------------------------------------------------- the batch-of-one path (step_one)

ONE_CONFIGS = [
    {},
    {"num_scales": 3, "glimpse_size": 4},
    {"relative": True, "max_step": 0.5},
    {"clip_actions": True},
    {"clip_actions": True, "relative": True, "max_step": 0.25},
    {"early_stop": True, "num_targets": 3, "step_reward": -0.25},
    {"num_targets": 2, "context_size": 5},
    {"num_scales": 2, "scale_factor": 1.5},  # the IntegralImage path
    {"init_location": "random"},
]


def one_pair(**cfg) -> tuple[GlimpseMDP, GlimpseMDP]:
    """Two B=1 MDPs of the same config: the scalar path and the general path."""
    cfg.setdefault("num_glimpses", 3)
    fast, slow = GlimpseMDP(MDPConfig(**cfg), 1), GlimpseMDP(MDPConfig(**cfg), 1)
    slow.scalar_path = False
    assert fast.scalar_path
    return fast, slow


def assert_same_one(a, b) -> None:
    """Two OneStep results (or observations) are identical, bit for bit."""
    obs_a, obs_b = (a, b) if isinstance(a, dict) else (a.obs, b.obs)
    assert obs_a.keys() == obs_b.keys()
    for k in obs_a:
        assert obs_a[k].dtype == obs_b[k].dtype == np.float32, k
        assert (obs_a[k] == obs_b[k]).all(), k
    if not isinstance(a, dict):
        assert a[1:] == b[1:]
        assert [type(v) for v in a[1:]] == [type(v) for v in b[1:]]


def one_actions(gen: torch.Generator, n: int, bound: float, early_stop: bool):
    """Random actions, a good share of them invalid (NaN, inf, out of range, bad label or
    stop)."""
    out = []
    for _ in range(n):
        xy = ((torch.rand(2, generator=gen) * 2 - 1) * bound * 1.3).double().numpy()
        label, stop = int(torch.randint(0, 10, (), generator=gen)), 0
        kind = int(torch.randint(0, 12, (), generator=gen))
        if kind == 0:
            xy[0] = float("nan")
        elif kind == 1:
            xy[1] = -float("inf")
        elif kind == 2:
            label = 10
        elif kind == 3:
            label = -(2**63)
        elif kind == 4:
            stop = 2
        elif kind in (5, 6):
            stop = 1 if early_stop or kind == 5 else 0
        out.append((xy, label, stop))
    return out


@pytest.mark.parametrize("cfg", ONE_CONFIGS, ids=lambda c: ",".join(c) or "default")
def test_step_one_scalar_path_matches_the_general_path(cfg):
    fast, slow = one_pair(**cfg)
    gen = torch.Generator().manual_seed(0)
    images = make_images(6, seed=1)
    targets = fast.config.num_targets
    labels = torch.randint(0, 10, (6, targets), generator=gen)
    bound = fast.config.location_bound
    steps = errors = episode = 0

    def reset_both(episode: int) -> None:
        init = None
        if episode % 2:
            init = tuple((torch.rand(2, generator=gen) * 2 - 1).tolist())
        i = episode % 6
        torch.manual_seed(episode)  # init_location="random" draws from torch's generator
        a = fast.reset_one(images[i : i + 1], labels[i], init)
        torch.manual_seed(episode)
        b = slow.reset_one(images[i : i + 1], labels[i], init)
        assert_same_one(a, b)
        assert_same_state(state(fast), state(slow))

    reset_both(0)
    for xy, label, stop in one_actions(gen, 200, bound, fast.config.early_stop):
        results = []
        for mdp in (fast, slow):
            try:
                results.append(mdp.step_one(xy, label, stop))
            except ActionError as err:
                results.append(str(err))
        if isinstance(results[0], str):
            assert results[0] == results[1]
            assert "\n" not in results[0]
            errors += 1
        else:
            assert not isinstance(results[1], str), results[1]
            assert_same_one(*results)
            steps += 1
        assert_same_state(state(fast), state(slow))
        if isinstance(results[0], str):
            if "has ended" in results[0]:
                reset_both(episode := episode + 1)
        elif results[0].terminated and episode % 3:  # else step once more: both refuse
            reset_both(episode := episode + 1)
    assert steps > 20 and errors > 20  # both kinds were exercised


def test_step_one_rejects_an_action_without_changing_the_state():
    fast, slow = one_pair(num_glimpses=2)
    for mdp in (fast, slow):
        mdp.reset_one(make_images(1), torch.tensor([3]))
        mdp.step_one(np.array([0.5, -0.5]), 3)
    before = state(fast)
    for xy, label, stop, match in [
        ([float("nan"), 0.0], 0, 0, r"finite, got NaN/inf at index 0: \[nan, 0.0\]$"),
        ([1.5, 0.25], 0, 0, r"\[-1, 1\]\^2, got index 0: \[1.5, 0.25\]; build the env"),
        ([0.0, 0.0], 10, 0, r"class index in \[0, 10\), got 10 at index 0$"),
        ([0.0, 0.0], 0, 2, r"stop must be 0/1 or bool, got \[2\] \(torch.int64\)$"),
        ([0.0, 0.0], 0, 1, "early_stop=False"),
    ]:
        for mdp in (fast, slow):
            with pytest.raises(ActionError, match=match):
                mdp.step_one(np.array(xy), label, stop)
        assert_same_state(before, state(fast))
    assert fast.step_one(np.zeros(2), 3).terminated
    with pytest.raises(ActionError, match=r"episode 0 has ended"):
        fast.step_one(np.zeros(2), 3)


def test_reset_one_rejects_bad_labels_and_locations_like_reset():
    fast, slow = one_pair()
    for mdp in (fast, slow):
        mdp.reset_one(make_images(1), torch.tensor([1]))
    before = state(fast)
    for labels, init, match in [
        (torch.tensor([10]), None, r"labels must lie in \[0, 10\), got \[\[10\]\]$"),
        (torch.tensor([1, 2]), None, r"expected 1 label\(s\) per episode, got shape \(1, 2\)$"),
        (torch.tensor([1]), (1.5, 0.0), r"init_loc must be finite and in \[-1, 1\], got"),
        (torch.tensor([1]), (0.0, 0.0, 0.0), r"init_loc must have shape \(1, 2\), got \(3,\)$"),
    ]:
        messages = []
        for mdp in (fast, slow):
            with pytest.raises(ValueError) as err:
                mdp.reset_one(make_images(1, seed=5), labels, init)
            messages.append(str(err.value))
        assert messages[0] == messages[1]
        assert re.search(match, messages[0]), messages[0]
        assert_same_state(before, state(fast))
